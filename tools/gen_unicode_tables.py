#!/usr/bin/env python3
"""Generate nodes/clip/unicode_tables.c: the Unicode data the CLIP tokenizer needs.

The CLIP tokenizer weft must match is transformers' fast CLIPTokenizer (the
Rust `tokenizers` crate): NFC, then runs of White_Space -> " ", then a
per-character lower-case, then the split regex with \\p{L} / \\p{N} / \\s.
This script writes compact tables (ranges, not per-code-point arrays) for:

  - letters (\\p{L}) and numbers (\\p{N}) as code point ranges,
  - White_Space (what Oniguruma's \\s matches),
  - the per-character lower-case mapping as runs (delta, stride),
  - NFC: canonical combining classes (ranges), canonical decompositions,
    primary composites (pairs that NFC recomposes),
  - Python's str.isspace() set and decimal digits (ComfyUI parses prompt
    weights with Python's float(), which accepts both).

Source: Python's unicodedata / str.lower().  The Rust crate uses newer Unicode
for the regex classes and lower-casing than this Python does, so by default the
script also asks the real tokenizer (installed transformers/tokenizers) about
every code point and, for code points this Python's unicodedata leaves
unassigned, takes the tokenizer's answer.  It refuses to override an assigned
code point (that would mean a real disagreement to look at).

NFC is the other way round: the Rust normaliser (unicode-normalization-
alignments) is at Unicode 9.0, older than this Python: it does not compose
U+11938 and treats the combining marks added since 9.0 as starters (class 0).
So the NFC tables come from a Python whose unicodedata is 9.0 (Python 3.6;
--nfc-python, default: the first python3.6 found), run as a subprocess; the
probe then checks every canonical decomposition and the ordering of every
combining mark against the tokenizer.

Usage: tools/gen_unicode_tables.py [--no-probe] [--nfc-python PY] [-o FILE]
"""
import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import textwrap
import unicodedata

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "..", "nodes", "clip", "unicode_tables.c")

# Unicode White_Space (PropList.txt); Oniguruma's \s in the tokenizer's regexes.
WHITE_SPACE = ([0x9, 0xA, 0xB, 0xC, 0xD, 0x20, 0x85, 0xA0, 0x1680]
               + list(range(0x2000, 0x200B))
               + [0x2028, 0x2029, 0x202F, 0x205F, 0x3000])

CLIP_SPLIT = (r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|"
              r"[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+")


def code_points():
    for cp in range(0x110000):
        if not 0xD800 <= cp < 0xE000:
            yield cp


def ranges_of(pred):
    out, start = [], None
    for cp in range(0x110001):
        ok = cp < 0x110000 and not 0xD800 <= cp < 0xE000 and pred(cp)
        if ok and start is None:
            start = cp
        elif not ok and start is not None:
            out.append((start, cp - 1))
            start = None
    return out


def base_class(cp):
    if cp in WHITE_SPACE_SET:
        return "S"
    g = unicodedata.category(chr(cp))[0]
    return g if g in "LN" else "O"


WHITE_SPACE_SET = set(WHITE_SPACE)


def probe_tokenizer():
    """Ask the Rust tokenizer for each code point's class and lower-case."""
    from tokenizers import Regex, normalizers, pre_tokenizers
    split = pre_tokenizers.Split(Regex(CLIP_SPLIT), behavior="removed",
                                 invert=True)
    norm = normalizers.Sequence([
        normalizers.NFC(),
        normalizers.Replace(Regex(r"\s+"), " "),
        normalizers.Lowercase()])

    def rclass(c):
        if not split.pre_tokenize_str(c):
            return "S"
        if len(split.pre_tokenize_str("a" + c)) == 1:
            return "L"
        if len(split.pre_tokenize_str("!" + c)) == 1:
            return "O"
        return "N"

    cls, low = {}, {}
    for cp in code_points():
        c = chr(cp)
        cls[cp] = rclass(c)
        low[cp] = norm.normalize_str(c)
    return cls, low, normalizers.NFC()


# Run under --nfc-python: print this Python's NFC data and the NFC of the test
# strings given on stdin, as JSON.
NFC_SCRIPT = r"""
import json, sys, unicodedata as u
cps = [cp for cp in range(0x110000) if not 0xD800 <= cp < 0xE000]
ccc = []
for cp in cps:
    c = u.combining(chr(cp))
    if not c:
        continue
    if ccc and ccc[-1][1] == cp - 1 and ccc[-1][2] == c:
        ccc[-1][1] = cp
    else:
        ccc.append([cp, cp, c])
decomp, comp = [], []
for cp in cps:
    d = u.decomposition(chr(cp))
    if not d or d.startswith("<"):
        continue
    parts = [int(x, 16) for x in d.split()]
    assert len(parts) in (1, 2)
    decomp.append([cp, parts[0], parts[1] if len(parts) == 2 else 0])
    # A primary composite: a pair NFC composes back to this code point (not a
    # singleton, not a non-starter decomposition, not composition-excluded).
    if len(parts) == 2 and u.normalize("NFC", chr(cp)) == chr(cp):
        comp.append([parts[0], parts[1], cp])
comp.sort()
tests = json.load(sys.stdin)
json.dump({"version": u.unidata_version, "python": sys.version.split()[0], "ccc": ccc, "decomp": decomp,
           "comp": comp, "nfc": [u.normalize("NFC", t) for t in tests]},
          sys.stdout)
"""


def find_nfc_python():
    cands = sorted(glob.glob(os.path.expanduser(
        "~/.pyenv/versions/3.6*/bin/python3")))
    cands += [p for p in (shutil.which("python3.6"),) if p]
    for p in cands:
        ok = subprocess.run([p, "-c", "import unicodedata"],
                            capture_output=True).returncode == 0
        if ok:
            return p
    return None


def nfc_tests():
    """Strings whose NFC shows the composition and mark order a normaliser
    uses: every canonical decomposition, and every combining mark next to
    marks of low, middle and high class in both orders."""
    tests = []
    for cp in code_points():
        d = unicodedata.decomposition(chr(cp))
        if d and not d.startswith("<"):
            tests.append("".join(chr(int(x, 16)) for x in d.split()))
    marks = [cp for cp in code_points() if unicodedata.combining(chr(cp))]
    marks += [cp for cp in code_points()
              if unicodedata.category(chr(cp)) in ("Mn", "Mc")
              and not unicodedata.combining(chr(cp))]
    for cp in marks:
        for m in ("\u0334", "\u0316", "\u0301", "\u0345"):
            tests.append("a" + chr(cp) + m)
            tests.append("a" + m + chr(cp))
    return tests


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-o", "--out", default=DEFAULT_OUT)
    ap.add_argument("--no-probe", action="store_true",
                    help="use Python's unicodedata only")
    ap.add_argument("--nfc-python", default=None,
                    help="Python whose unicodedata matches the tokenizer's "
                    "NFC (Unicode 9.0: Python 3.6)")
    args = ap.parse_args()

    nfc_py = args.nfc_python or find_nfc_python()
    if not nfc_py:
        sys.exit("no python3.6 found for the NFC tables: pass --nfc-python")
    tests = nfc_tests()
    res = subprocess.run([nfc_py, "-c", NFC_SCRIPT], input=json.dumps(tests),
                         capture_output=True, text=True, check=True)
    nfc = json.loads(res.stdout)
    if nfc["version"] != "9.0.0":
        print("warning: %s has unicodedata %s, the tokenizer's NFC is 9.0.0"
              % (nfc_py, nfc["version"]))

    cls = {cp: base_class(cp) for cp in code_points()}
    lower = {}
    for cp in code_points():
        lo = chr(cp).lower()
        if lo != chr(cp):
            lower[cp] = lo

    note = "no tokenizer probe (--no-probe)"
    if not args.no_probe:
        try:
            import tokenizers
            rcls, rlow, rnfc = probe_tokenizer()
        except ImportError:
            sys.exit("tokenizers is not installed: install it or pass --no-probe")
        n_cls = n_low = 0
        for cp in code_points():
            assigned = unicodedata.category(chr(cp)) != "Cn"
            if rcls[cp] != cls[cp]:
                if assigned:
                    sys.exit("U+%04X: tokenizer says class %s, unicodedata %s"
                             % (cp, rcls[cp], cls[cp]))
                cls[cp] = rcls[cp]
                n_cls += 1
            if cls[cp] == "S":
                continue
            want = rlow[cp]
            mine = unicodedata.normalize("NFC", chr(cp))
            mine = "".join(ch.lower() for ch in mine)
            if want != mine:
                if assigned:
                    sys.exit("U+%04X: tokenizer lower-cases to %r, Python to %r"
                             % (cp, want, mine))
                if len(want) != 1:
                    sys.exit("U+%04X: multi-character lower-case %r" % (cp, want))
                lower[cp] = want
                n_low += 1
        # NFC: the tokenizer must compose and order exactly as the tables.
        bad = [t for t, want in zip(tests, nfc["nfc"])
               if rnfc.normalize_str(t) != want]
        if bad:
            sys.exit("%d NFC test strings differ from the tokenizer, e.g. %r"
                     % (len(bad), bad[:5]))
        note = ("classes of %d and lower-case of %d code points unassigned in "
                "unicodedata %s taken from tokenizers %s; NFC checked against "
                "it on %d strings" % (n_cls, n_low, unicodedata.unidata_version,
                                      tokenizers.__version__, len(tests)))

    letters = ranges_of(lambda cp: cls[cp] == "L")
    numbers = ranges_of(lambda cp: cls[cp] == "N")
    spaces = ranges_of(lambda cp: cls[cp] == "S")
    assert spaces == ranges_of(lambda cp: cp in WHITE_SPACE_SET), spaces

    # Lower-case runs: (lo, hi, delta, stride); U+0130 (the only code point
    # whose lower-case is two characters) is handled in code.
    runs = []
    for cp in sorted(lower):
        lo = lower[cp]
        if len(lo) != 1:
            assert cp == 0x130 and lo == "i\u0307", (hex(cp), lo)
            continue
        d = ord(lo) - cp
        if runs:
            r = runs[-1]
            if r[2] == d and r[3] == 0 and cp - r[1] in (1, 2):
                r[1], r[3] = cp, cp - r[1]
                continue
            if r[2] == d and r[3] and cp - r[1] == r[3]:
                r[1] = cp
                continue
        runs.append([cp, cp, d, 0])
    for r in runs:
        if r[3] == 0:
            r[3] = 1

    ccc, decomp, comp = nfc["ccc"], nfc["decomp"], nfc["comp"]

    isspace = ranges_of(lambda cp: chr(cp).isspace())
    digit_zero = [cp for cp in code_points()
                  if unicodedata.decimal(chr(cp), None) == 0]
    for cp in code_points():
        v = unicodedata.decimal(chr(cp), None)
        if v is not None:
            z = max(z for z in digit_zero if z <= cp)
            assert cp - z == v, hex(cp)

    w = []
    src = ("Sources: Python %s unicodedata %s; NFC tables from Python %s "
           "unicodedata %s; %s." % (sys.version.split()[0],
                                     unicodedata.unidata_version,
                                     nfc["python"], nfc["version"], note))
    w.append("/* unicode_tables.c - Unicode data for the CLIP tokenizer "
             "(letters, numbers,\n * white space, lower-case, NFC, Python's "
             "isspace and decimal digits).\n *\n"
             " * GENERATED by tools/gen_unicode_tables.py; do not edit.\n"
             + "".join(" * " + l + "\n" for l in textwrap.wrap(src, 75))
             + " */\n")
    w.append("#define WEFT_CLIP_TOK_INTERNAL\n#include \"tokenizer.h\"\n")
    w.append("\n/* clang-format off */\n")

    def table(ctype, name, rows, fmt, per_line):
        w.append("\nconst %s %s[] = {\n" % (ctype, name))
        line = "   "
        for i, row in enumerate(rows):
            item = " " + fmt % tuple(row) + ","
            if len(line) + len(item) > 79:
                w.append(line + "\n")
                line = "   "
            line += item
        w.append(line + "\n};\n")
        w.append("const size_t %s_n = %d;\n" % (name, len(rows)))

    table("weft__uni_range", "weft__uni_letters", letters,
          "{0x%X, 0x%X}", 4)
    table("weft__uni_range", "weft__uni_numbers", numbers,
          "{0x%X, 0x%X}", 4)
    table("weft__uni_range", "weft__uni_white_space", spaces,
          "{0x%X, 0x%X}", 4)
    table("weft__uni_range", "weft__uni_py_space", isspace,
          "{0x%X, 0x%X}", 4)
    table("weft__uni_case_run", "weft__uni_lower", runs,
          "{0x%X, 0x%X, %d, %d}", 3)
    table("weft__uni_ccc_range", "weft__uni_ccc", ccc,
          "{0x%X, 0x%X, %d}", 3)
    table("weft__uni_pair", "weft__uni_decomp", decomp,
          "{0x%X, 0x%X, 0x%X}", 3)
    table("weft__uni_pair", "weft__uni_comp", comp,
          "{0x%X, 0x%X, 0x%X}", 3)
    table("uint32_t", "weft__uni_digit_zero", [(z,) for z in digit_zero],
          "0x%X", 8)

    with open(args.out, "w", encoding="ascii") as f:
        f.write("".join(w))
    print("%s: %d letter, %d number ranges, %d lower-case runs, %d ccc "
          "ranges, %d decompositions, %d compositions; %s"
          % (args.out, len(letters), len(numbers), len(runs), len(ccc),
             len(decomp), len(comp), note))


if __name__ == "__main__":
    main()
