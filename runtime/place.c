/* place.c - where a node runs and the copies that needs (ABI 1.4; see
 * weft_device_ops in plugin.h): a WEFT_NODE_DEVICE node on the device of
 * its first input object that has one, any other on the CPU; each tensor
 * input that is not where its port wants it (a WEFT_PORT_DEVICE input on
 * the node's device, any other on the host) is copied there before the
 * node runs.  Shared by runs (sched_uv.c) and plan mode (plan_graph.c). */
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

weft_value *weft__placer(const weft_node_def *d, weft_value *const *ins) {
  for (int k = 0; k < d->n_inputs && d->flags & WEFT_NODE_DEVICE; k++) {
    weft_value *v = ins[k];
    if (v && v->kind == WEFT__V_OBJECT && v->dev >= 0) return v;
  }
  return NULL;
}

int32_t weft__port_device(const weft_port_def *port, int32_t node_device) {
  return port->flags & WEFT_PORT_DEVICE ? node_device : WEFT_DEVICE_CPU;
}

void weft__device_name(int32_t d, char *buf, size_t len) {
  if (d == WEFT_DEVICE_CPU)
    snprintf(buf, len, "the host");
  else
    snprintf(buf, len, "device %d", (int)d);
}

int weft__place_inputs(weft_call *call, weft_value **ins, weft_value ***xin) {
  const weft_node_def *d = call->def;
  weft__callpriv *p = call->priv;
  weft_value *place = weft__placer(d, ins);
  p->place = place;
  call->device = place ? place->dev : WEFT_DEVICE_CPU;
  for (int k = 0; k < d->n_inputs; k++) {
    weft_value *v = ins[k];
    const int32_t to = weft__port_device(&d->inputs[k], call->device);
    if (!v || v->kind != WEFT__V_TENSOR || v->t.device == to) continue;
    if (!*xin && !(*xin = calloc((size_t)d->n_inputs, sizeof **xin))) {
      snprintf(p->err, sizeof p->err, "out of memory");
      return WEFT_ENOMEM;
    }
    char from[32], dst[32], why[256];
    weft__device_name(v->t.device, from, sizeof from);
    weft__device_name(to, dst, sizeof dst);
    size_t bytes;
    int rc = weft__value_transfer(v, to, place, &(*xin)[k], &bytes, why,
                                  sizeof why);
    if (rc) {
      snprintf(p->err, sizeof p->err,
               "input '%s': cannot copy it from %s to %s: %s",
               d->inputs[k].name, from, dst, why);
      return rc;
    }
    ins[k] = (*xin)[k];
    char msg[256];
    snprintf(msg, sizeof msg, "transfer: input '%s', %zu bytes, %s -> %s",
             d->inputs[k].name, bytes, from, dst);
    weft__emit_log(call, WEFT_LOG_DEBUG, msg);
  }
  return 0;
}

void weft__drop_moved(weft_value **xin, int n_inputs) {
  for (int k = 0; xin && k < n_inputs; k++) {
    weft__value_release(xin[k]);
    xin[k] = NULL;
  }
}
