/* error.h - weft's error codes: one X-macro table yields the negative WEFT_E*
 * codes, and (in libweft) weft_strerror and weft_err_name.  Included by both
 * plugin.h and weft.h, so plugins return the same codes the runtime reports. */
#ifndef WEFT_ERROR_H
#define WEFT_ERROR_H

/* XX(name, message, is_bad_input): is_bad_input selects exit code 2 (the
 * user's input is wrong) over 1 (the run failed). */
#define WEFT_ERRNO_MAP(XX)                                                     \
  XX(EINVAL, "invalid argument", 1)                                            \
  XX(ENOMEM, "out of memory", 0)                                               \
  XX(EIO, "input/output error", 0)                                             \
  XX(ENOENT, "no such file or name", 1)                                        \
  XX(ESYNTAX, "syntax error", 1)                                               \
  XX(ETYPE, "type mismatch", 1)                                                \
  XX(ERANGE, "value out of range", 1)                                          \
  XX(ECYCLE, "graph has a cycle", 1)                                           \
  XX(EMISSING, "required input missing", 1)                                    \
  XX(EDUP, "duplicate name", 1)                                                \
  XX(EABI, "plugin ABI version mismatch", 1)                                   \
  XX(EPLUGIN, "invalid plugin", 1)                                             \
  XX(EFORMAT, "malformed file", 1)                                             \
  XX(EUNSUPPORTED, "not supported", 1)                                         \
  XX(ECANCELED, "cancelled", 0)                                                \
  XX(ERUN, "node failed", 0)                                                   \
  XX(EDEVICE, "device error", 0)                                               \
  XX(EINTERNAL, "internal error", 0)

typedef enum weft_errno {
  WEFT_OK = 0,
  WEFT_ERRNO_FIRST_ = -1000,
#define WEFT_XX_ENUM_(name, msg, bad) WEFT_##name,
  WEFT_ERRNO_MAP(WEFT_XX_ENUM_)
#undef WEFT_XX_ENUM_
  WEFT_ERRNO_LAST_
} weft_errno;

#endif /* WEFT_ERROR_H */
