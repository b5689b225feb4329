// Package mgcp is an RFC 3435 Media Gateway Control Protocol stack for the
// call-agent side: message structs with a symmetric parser and serializer,
// endpoint names, events and signals, LocalConnectionOptions, return codes,
// digit maps, and a CallAgent that owns the UDP transaction layer
// (retransmission with backoff, at-most-once execution through a response
// cache, provisional responses, response acknowledgements and piggybacking).
//
// The package imports only the standard library and logrus. SDP bodies are
// carried as opaque bytes; translating them is the bridge's job.
package mgcp
