// Package orderd holds what the service embeds from the repository's root:
// its OpenAPI and AsyncAPI contracts. The service itself is in cmd/orderd
// and internal/.
package orderd

import _ "embed"

// OpenAPI is openapi.yaml, the contract that the server answers at
// /openapi.yaml and that the end-to-end tests validate against.
//
//go:embed openapi.yaml
var OpenAPI []byte

// AsyncAPI is asyncapi.yaml, the contract of the events published to Kafka
// (topics, CloudEvents headers, key and one payload schema per event type
// and schema version). The server answers it at /asyncapi.yaml, and the
// relay's end-to-end tests validate every record they read back against it.
//
//go:embed asyncapi.yaml
var AsyncAPI []byte
