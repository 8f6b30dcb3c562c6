// Package apitest gives tests openapi.yaml, the one contract, as a router
// that finds the operation of a request, for validating requests and
// answers with kin-openapi's openapi3filter.
package apitest

import (
	"context"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/orderd/orderd"
)

// uuidFormat makes the validator check format: uuid. RFC 9562's pattern
// admits version 7, which the server's ids are.
var uuidFormat sync.Once

// Contract loads openapi.yaml for a server at base. It fails t when the
// document does not load or is not valid OpenAPI.
func Contract(t testing.TB, base string) routers.Router {
	t.Helper()
	uuidFormat.Do(func() {
		openapi3.DefineStringFormatValidator("uuid", openapi3.NewRegexpFormatValidator(openapi3.FormatOfStringForUUIDOfRFC9562))
	})
	doc, err := openapi3.NewLoader().LoadFromData(orderd.OpenAPI)
	if err != nil {
		t.Fatalf("load openapi.yaml: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("openapi.yaml is not valid: %v", err)
	}
	doc.Servers = openapi3.Servers{{URL: base}}
	r, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatalf("route openapi.yaml: %v", err)
	}
	return r
}
