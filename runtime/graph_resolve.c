/* graph_resolve.c - placeholder, being written. */
typedef int weft_placeholder_graph_resolve;
