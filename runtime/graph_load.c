/* graph_load.c - placeholder, being written. */
typedef int weft_placeholder_graph_load;
