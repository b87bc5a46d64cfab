#ifndef MESHGATE_CYAML_SHIM_H
#define MESHGATE_CYAML_SHIM_H
#include <yaml.h>
#endif
