// Package e2ekeys checks end-to-end encryption key objects (the spec's DeviceKeys and
// CrossSigningKey) wherever they arrive: from clients (userapi) and from other servers
// (federationapi).
package e2ekeys

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"slices"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
)

// The ways a key object can be wrong.
var (
	// ErrMalformed: not a JSON object of the expected shape.
	ErrMalformed = errors.New("malformed key object")
	// ErrWrongOwner: the object names another user or device, or lacks the key it must hold.
	ErrWrongOwner = errors.New("key object of another user or device")
	// ErrBadSignature: the signature the object must carry is missing or does not verify.
	ErrBadSignature = errors.New("key object not signed by its key")
)

// DecodeKey decodes an unpadded (or padded) base64 ed25519 public key.
func DecodeKey(s string) (ed25519.PublicKey, bool) {
	b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, false
	}
	return ed25519.PublicKey(b), true
}

// DeviceKeys is the part of a DeviceKeys object the server checks.
type DeviceKeys struct {
	UserID     string            `json:"user_id"`
	DeviceID   string            `json:"device_id"`
	Algorithms []string          `json:"algorithms"`
	Keys       map[string]string `json:"keys"`
}

// VerifyDeviceKeys checks that raw is userID's device deviceID's DeviceKeys object, signed
// by the device's own ed25519 key, and returns that key.
func VerifyDeviceKeys(raw json.RawMessage, userID, deviceID string) (ed25519.PublicKey, error) {
	var obj map[string]json.RawMessage
	var dk DeviceKeys
	if json.Unmarshal(raw, &obj) != nil || obj == nil || json.Unmarshal(raw, &dk) != nil {
		return nil, ErrMalformed
	}
	for _, field := range []string{"user_id", "device_id", "algorithms", "keys", "signatures"} {
		if _, ok := obj[field]; !ok {
			return nil, ErrMalformed // the DeviceKeys schema requires every one of them
		}
	}
	if dk.UserID != userID || dk.DeviceID != deviceID {
		return nil, ErrWrongOwner
	}
	keyID := "ed25519:" + deviceID
	pub, ok := DecodeKey(dk.Keys[keyID])
	if !ok {
		return nil, ErrWrongOwner
	}
	if gomatrixserverlib.VerifyJSON(userID, gomatrixserverlib.KeyID(keyID), pub, raw) != nil {
		return nil, ErrBadSignature
	}
	return pub, nil
}

// CrossSigningKey is a parsed CrossSigningKey object: its one ed25519 key.
type CrossSigningKey struct {
	Public ed25519.PublicKey
	// ID is "ed25519:<public key>"; PublicBase64 the public key as sent.
	ID, PublicBase64 string
}

// ParseCrossSigningKey checks that raw is a CrossSigningKey object of userID with usage
// purpose and exactly one ed25519 key whose ID is ed25519:<public key>.
func ParseCrossSigningKey(raw json.RawMessage, userID, purpose string) (*CrossSigningKey, error) {
	var k struct {
		UserID string            `json:"user_id"`
		Usage  []string          `json:"usage"`
		Keys   map[string]string `json:"keys"`
	}
	if json.Unmarshal(raw, &k) != nil || k.Keys == nil {
		return nil, ErrMalformed
	}
	if k.UserID != userID || !slices.Contains(k.Usage, purpose) || len(k.Keys) != 1 {
		return nil, ErrWrongOwner
	}
	for id, value := range k.Keys {
		pub, ok := DecodeKey(value)
		if !ok || id != "ed25519:"+value {
			return nil, ErrMalformed
		}
		return &CrossSigningKey{Public: pub, ID: id, PublicBase64: value}, nil
	}
	return nil, ErrMalformed
}

// SignedBy reports whether raw carries signer's valid signature by key k.
func SignedBy(raw json.RawMessage, signer string, k *CrossSigningKey) bool {
	return gomatrixserverlib.VerifyJSON(signer, gomatrixserverlib.KeyID(k.ID), k.Public, raw) == nil
}
