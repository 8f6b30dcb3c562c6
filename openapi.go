// Package orderd holds what the service embeds from the repository's root:
// its OpenAPI contract. The service itself is in cmd/orderd and internal/.
package orderd

import _ "embed"

// OpenAPI is openapi.yaml, the contract that the server answers at
// /openapi.yaml and that the end-to-end tests validate against.
//
//go:embed openapi.yaml
var OpenAPI []byte
