/* graph_dot.c - placeholder, being written. */
typedef int weft_placeholder_graph_dot;
