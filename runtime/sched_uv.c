/* sched_uv.c - placeholder, being written. */
typedef int weft_placeholder_sched_uv;
