// Package clustertest holds the cluster's acceptance tests and its soak:
// separate `mgsip run` processes (the binary built from ./cmd/mgsip into
// the test's temporary directory) on a real etcd, Kamailio as registrar
// with digest, and simulated gateways in the test process whose sockets
// record the source and time of every MGCP datagram they receive. Nodes
// are killed with SIGKILL by PID, cut off etcd by a black-holing TCP proxy,
// and etcd itself is restarted and paused. See docs/cluster.md.
//
// The package has no code outside its tests; this file only documents it.
package clustertest
