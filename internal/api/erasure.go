package api

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/pii"
	"github.com/orderd/orderd/internal/store"
)

// ScopeKeysRead grants GET /v1/keys/{subject}: the data keys with which an
// authorised consumer of the Kafka records decrypts their personal fields.
// The admin scope (and the admin token) grant it too.
const ScopeKeysRead = "keys:read"

// DataKeys is what the key endpoint needs of the keyring.
type DataKeys interface {
	// Existing returns the subject's key without creating one:
	// pii.ErrErased once erased, store.ErrKeyNotFound when it has none.
	Existing(ctx context.Context, subject uuid.UUID) (*pii.DataKey, error)
}

// Errors of the key endpoint, rows of problems.
var (
	errKeyErased   = errors.New("subject erased")
	errKeyNotFound = errors.New("no data key")
)

// WithKeys serves GET /v1/keys/{subject} from keys, to the admin token or
// a token of scope keys:read or admin. Like the admin routes it is not
// mounted at all without a credential to ask for.
func (s *Server) WithKeys(keys DataKeys) *Server {
	s.dataKeys = keys
	return s
}

// mountErasure adds POST /v1/customers/{id}/erasure, for the admin token or
// a token of scope admin, when there is a credential to ask for.
func (s *Server) mountErasure(r chi.Router) {
	if s.adminToken == "" && s.tokens == nil {
		return
	}
	if s.tokens == nil {
		r = r.With(s.authorize) // with tokens, authenticate asks for admin
	}
	r.Post("/{id}/erasure", s.command("EraseCustomer", s.eraseCustomer))
}

// mountKeys adds GET /v1/keys/{subject} when WithKeys configured it and
// there is a credential to ask for.
func (s *Server) mountKeys(r chi.Router) {
	if s.dataKeys == nil || (s.adminToken == "" && s.tokens == nil) {
		return
	}
	if s.tokens == nil {
		r = r.With(s.authorize)
	}
	r.Get("/v1/keys/{subject}", s.handle(s.getKey))
}

// eraseCustomer erases a customer's personal data: CustomerErased, then
// its data key destroyed. It answers the customer's version; erasing an
// erased customer again answers the same (and destroys the key again,
// completing an erasure whose key destruction failed).
func (s *Server) eraseCustomer(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	meta, err := s.meta(r, id)
	if err != nil {
		return err
	}
	v, err := s.commands.EraseCustomer(r.Context(), id, meta)
	if err != nil {
		return err
	}
	return writeCommandResult(w, http.StatusOK, id, v)
}

// keyJSON is the answer of GET /v1/keys/{subject}.
type keyJSON struct {
	Subject   uuid.UUID `json:"subject"`
	Algorithm string    `json:"algorithm"`
	Key       string    `json:"key"` // standard base64 of the 32 bytes
}

// getKey answers a subject's data key: 404 when it has none, 410 once
// erased.
func (s *Server) getKey(w http.ResponseWriter, r *http.Request) error {
	subject, err := parseUUID(chi.URLParam(r, "subject"), "subject")
	if err != nil {
		return err
	}
	if subject == uuid.Nil { // the claims' hash secret is no consumer's
		return &aggregate.Error{Kind: errKeyNotFound, Code: "key_not_found", Detail: "no data key of the nil subject"}
	}
	k, err := s.dataKeys.Existing(r.Context(), subject)
	switch {
	case errors.Is(err, pii.ErrErased):
		return &aggregate.Error{Kind: errKeyErased, Code: "subject_erased",
			Detail: "the subject was erased: its data key is destroyed and its personal data unreadable"}
	case errors.Is(err, store.ErrKeyNotFound):
		return &aggregate.Error{Kind: errKeyNotFound, Code: "key_not_found", Detail: "the subject has no data key"}
	case err != nil:
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	return writeJSON(w, http.StatusOK, keyJSON{Subject: subject, Algorithm: "AES-256-GCM", Key: base64.StdEncoding.EncodeToString(k.Raw())})
}
