/*
 * Meshgate filter ABI.
 *
 * This header is the contract that third-party filter plugins compile against.
 * The functions and types of ABI v1 arrive with the filter-plugin work; until
 * then only the version constants exist, so that the host and the build know
 * where the contract lives. Nothing here may ever change meaning once released:
 * a breaking change gets a new major version beside the old one.
 */
#ifndef MESHGATE_FILTER_H
#define MESHGATE_FILTER_H

#define MESHGATE_FILTER_ABI_MAJOR 0
#define MESHGATE_FILTER_ABI_MINOR 0

#endif /* MESHGATE_FILTER_H */
