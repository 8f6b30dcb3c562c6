package pii

import (
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strings"

	"github.com/google/uuid"
)

// Prefix starts every encrypted field value: "pii1:" then the unpadded
// standard base64 of nonce (12 bytes) || AES-256-GCM ciphertext and tag.
// A value without it is plaintext (written before encryption existed, or
// in plaintext mode).
const Prefix = "pii1:"

// Erased is what a personal field reads as once its subject's key is
// destroyed.
const Erased = "[erased]"

// Personal field names, as in the events' JSON: each is part of the
// additional data of its ciphertext, so that a value moved to another
// field or subject does not decrypt.
const (
	FieldEmail     = "email"
	FieldFirstName = "first_name"
	FieldLastName  = "last_name"
	FieldPhone     = "phone"
	FieldSignature = "signature"
)

// DataKey is one subject's data key, ready to seal and open its fields.
// It is safe for concurrent use.
type DataKey struct {
	Subject uuid.UUID
	raw     []byte
	aead    cipher.AEAD
}

// NewDataKey returns the DataKey of subject from its 32 raw bytes (as
// GET /v1/keys/{subject} returns them, base64): what a consumer of the
// Kafka records needs to decrypt them.
func NewDataKey(subject uuid.UUID, raw []byte) (*DataKey, error) {
	if len(raw) != KEKSize {
		return nil, fmt.Errorf("pii: a data key is %d bytes, not %d", KEKSize, len(raw))
	}
	aead, err := newGCM(raw)
	if err != nil {
		return nil, err
	}
	return &DataKey{Subject: subject, raw: raw, aead: aead}, nil
}

// Raw returns the key's bytes (for the key endpoint). Never log them.
func (k *DataKey) Raw() []byte { return k.raw }

// fieldAAD binds a ciphertext to its subject and field.
func fieldAAD(subject uuid.UUID, field string) []byte {
	return []byte("orderd pii1|" + subject.String() + "|" + field)
}

// Seal encrypts a field's value. The empty string stays empty (an absent
// optional field reveals nothing worth a ciphertext).
func (k *DataKey) Seal(field, value string) string {
	if value == "" {
		return ""
	}
	return Prefix + base64.RawStdEncoding.EncodeToString(seal(k.aead, []byte(value), fieldAAD(k.Subject, field)))
}

// Open decrypts a field's value written by Seal; a value without Prefix is
// returned as it is (plaintext). It returns ErrDecrypt for a ciphertext
// that does not authenticate under this key, subject and field.
func (k *DataKey) Open(field, value string) (string, error) {
	enc, ok := strings.CutPrefix(value, Prefix)
	if !ok {
		return value, nil
	}
	sealed, err := base64.RawStdEncoding.DecodeString(enc)
	if err != nil {
		return "", ErrDecrypt
	}
	plain, err := open(k.aead, sealed, fieldAAD(k.Subject, field))
	if err != nil {
		return "", err
	}
	return string(plain), nil
}

// IsSealed reports whether value is a ciphertext of Seal.
func IsSealed(value string) bool { return strings.HasPrefix(value, Prefix) }

// Hasher computes the keyed hash of an e-mail claim's address: an HMAC
// with the deployment's secret, so that a claim's stream id no longer
// tells (or lets anyone with a list of addresses find) whose address it
// is.
type Hasher struct{ secret []byte }

// NewHasher returns the Hasher of a deployment secret.
func NewHasher(secret []byte) *Hasher { return &Hasher{secret: secret} }

// Sum returns HMAC-SHA256(secret, normalised address).
func (h *Hasher) Sum(normalised string) []byte {
	mac := hmac.New(sha256.New, h.secret)
	mac.Write([]byte(normalised))
	return mac.Sum(nil)
}

// ID returns the claim stream id of a normalised address: the first 16
// bytes of Sum, shaped as a UUID of version 8 (custom).
func (h *Hasher) ID(normalised string) uuid.UUID {
	var id uuid.UUID
	copy(id[:], h.Sum(normalised))
	id[6] = id[6]&0x0f | 0x80 // version 8
	id[8] = id[8]&0x3f | 0x80 // RFC 4122 variant
	return id
}
