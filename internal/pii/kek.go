// Package pii protects personal data by crypto-shredding: every personal
// field is encrypted with a data key of its subject (a customer), the data
// keys are kept by the engine wrapped by a key-encryption key (KEK) the
// operator supplies, and erasing a subject destroys its key, which makes
// every copy of its ciphertext unreadable (the log, snapshots, read
// models, backups, Kafka records).
//
// The package holds the KEK providers, the Keyring (data keys: create,
// cache, erase, rotate the KEK) and the field cipher (Seal, Open). A
// consumer of the Kafka records uses the same cipher with a key fetched
// from GET /v1/keys/{subject} (see pkg docs in docs/events.md).
package pii

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// KEK is a key-encryption key: it wraps and unwraps data keys. The local
// one (a 32-byte AES key from a file or the environment) is LocalKEK; a
// KMS could implement it by calling its encrypt and decrypt operations.
type KEK interface {
	// ID names the key, stored beside every key it wrapped, so that a
	// rotation knows which keys are still to rewrap and an unwrap which
	// KEK to use. It must not reveal the key.
	ID() string
	// Wrap encrypts a data key; aad binds the result to its subject.
	Wrap(ctx context.Context, key, aad []byte) ([]byte, error)
	// Unwrap decrypts what Wrap returned for the same aad.
	Unwrap(ctx context.Context, wrapped, aad []byte) ([]byte, error)
}

// KEKSize is the size of a local KEK: an AES-256 key.
const KEKSize = 32

// LocalKEK is a KEK held in this process's memory: AES-256-GCM with a
// random nonce.
type LocalKEK struct {
	id   string
	aead cipher.AEAD
}

// NewLocalKEK returns the KEK of a 32-byte key. Its id is the first 8
// bytes of an HMAC of a fixed label under the key, in hex: stable, and
// telling nothing of the key.
func NewLocalKEK(key []byte) (*LocalKEK, error) {
	if len(key) != KEKSize {
		return nil, fmt.Errorf("pii: a KEK is %d bytes, not %d", KEKSize, len(key))
	}
	aead, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte("orderd kek id"))
	return &LocalKEK{id: "local-" + hex.EncodeToString(mac.Sum(nil)[:8]), aead: aead}, nil
}

// ParseKEK reads a KEK written as text: 32 bytes in hex, or in base64
// (standard or URL alphabet, padded or not). Surrounding space is ignored,
// so a file may end with a newline.
func ParseKEK(text string) (*LocalKEK, error) {
	text = strings.TrimSpace(text)
	if b, err := hex.DecodeString(text); err == nil && len(b) == KEKSize {
		return NewLocalKEK(b)
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(text); err == nil && len(b) == KEKSize {
			return NewLocalKEK(b)
		}
	}
	return nil, errors.New("pii: a KEK is 32 bytes in hex or base64")
}

// ReadKEKFile reads a KEK file (ParseKEK's text).
func ReadKEKFile(path string) (*LocalKEK, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pii: read KEK: %w", err)
	}
	k, err := ParseKEK(string(b))
	if err != nil {
		return nil, fmt.Errorf("pii: %s: %w", path, err)
	}
	return k, nil
}

// EnsureKEKFile reads the KEK file at path, or, when there is none, makes
// a random KEK and writes it there (mode 0600, created exclusively, so
// that two processes never write two keys). created says which.
func EnsureKEKFile(path string) (k *LocalKEK, created bool, err error) {
	if k, err := ReadKEKFile(path); err == nil || !errors.Is(err, os.ErrNotExist) {
		return k, false, err
	}
	key := make([]byte, KEKSize)
	if _, err := rand.Read(key); err != nil {
		return nil, false, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, false, fmt.Errorf("pii: KEK dir: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) { // another process made it first
		k, err := ReadKEKFile(path)
		return k, false, err
	}
	if err != nil {
		return nil, false, fmt.Errorf("pii: write KEK: %w", err)
	}
	_, err = f.WriteString(base64.StdEncoding.EncodeToString(key) + "\n")
	if err == nil {
		err = f.Sync()
	}
	if err = errors.Join(err, f.Close()); err != nil {
		return nil, false, fmt.Errorf("pii: write KEK: %w", err)
	}
	k, err = NewLocalKEK(key)
	return k, true, err
}

// ID returns the KEK's id.
func (k *LocalKEK) ID() string { return k.id }

// Wrap encrypts key with a random nonce, which it prefixes.
func (k *LocalKEK) Wrap(_ context.Context, key, aad []byte) ([]byte, error) {
	return seal(k.aead, key, aad), nil
}

// Unwrap decrypts what Wrap returned.
func (k *LocalKEK) Unwrap(_ context.Context, wrapped, aad []byte) ([]byte, error) {
	return open(k.aead, wrapped, aad)
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// seal returns nonce || AES-GCM(plain, aad), with a random nonce.
func seal(aead cipher.AEAD, plain, aad []byte) []byte {
	out := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plain)+aead.Overhead())
	if _, err := rand.Read(out); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return aead.Seal(out, out, plain, aad)
}

// ErrDecrypt: a ciphertext does not decrypt under the key and context
// given (tampered with, or moved to another subject or field).
var ErrDecrypt = errors.New("pii: ciphertext does not authenticate")

func open(aead cipher.AEAD, sealed, aad []byte) ([]byte, error) {
	n := aead.NonceSize()
	if len(sealed) < n+aead.Overhead() {
		return nil, ErrDecrypt
	}
	plain, err := aead.Open(nil, sealed[:n], sealed[n:], aad)
	if err != nil {
		return nil, ErrDecrypt
	}
	return plain, nil
}
