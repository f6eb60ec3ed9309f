/* error.c - placeholder, being written. */
typedef int weft_placeholder_error;
