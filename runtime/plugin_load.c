/* plugin_load.c - placeholder, being written. */
typedef int weft_placeholder_plugin_load;
