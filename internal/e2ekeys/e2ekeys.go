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
	UserID     string                       `json:"user_id"`
	DeviceID   string                       `json:"device_id"`
	Algorithms []string                     `json:"algorithms"`
	Keys       map[string]string            `json:"keys"`
	Signatures map[string]map[string]string `json:"signatures"`
}

// CheckDeviceKeys checks that raw is a DeviceKeys object of userID's device deviceID: every
// field the schema requires, of its type (else ErrMalformed), naming that user and device
// (else ErrWrongOwner). It does not verify the device's self-signature: the spec does not
// ask servers to, clients verify it themselves before they trust a device, and Synapse
// stores such keys too (clients and test suites upload placeholder keys).
func CheckDeviceKeys(raw json.RawMessage, userID, deviceID string) error {
	var obj map[string]json.RawMessage
	var dk DeviceKeys
	if json.Unmarshal(raw, &obj) != nil || obj == nil || json.Unmarshal(raw, &dk) != nil {
		return ErrMalformed
	}
	for _, field := range []string{"user_id", "device_id", "algorithms", "keys", "signatures"} {
		if v, ok := obj[field]; !ok || string(v) == "null" {
			return ErrMalformed // the DeviceKeys schema requires every one of them
		}
	}
	if dk.UserID != userID || dk.DeviceID != deviceID {
		return ErrWrongOwner
	}
	return nil
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

// KeepDeviceKeys is what a server keeps of another server's device keys: raw without
// "unsigned" when it is a DeviceKeys object of userID's device deviceID, else nil.
func KeepDeviceKeys(raw json.RawMessage, userID, deviceID string) []byte {
	if len(raw) == 0 || CheckDeviceKeys(raw, userID, deviceID) != nil {
		return nil
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(raw, &obj) != nil {
		return nil
	}
	delete(obj, "unsigned")
	b, err := json.Marshal(obj)
	if err != nil {
		return nil
	}
	return b
}

// KeepCrossSigningKeys is what a server keeps of another server's user's cross-signing
// keys: master when it is userID's master key; selfSigning when it is their self-signing
// key signed by that master key (or, when master is absent, by heldMaster, the master key
// already held). Each key that fails is nil.
func KeepCrossSigningKeys(userID string, master, selfSigning, heldMaster json.RawMessage) (keptMaster, keptSelfSigning []byte) {
	signer := heldMaster
	if len(master) > 0 {
		if _, err := ParseCrossSigningKey(master, userID, "master"); err == nil {
			keptMaster = master
		}
		signer = keptMaster
	}
	if len(selfSigning) == 0 || len(signer) == 0 {
		return keptMaster, nil
	}
	mk, err := ParseCrossSigningKey(signer, userID, "master")
	if err != nil {
		return keptMaster, nil
	}
	if _, err := ParseCrossSigningKey(selfSigning, userID, "self_signing"); err == nil && SignedBy(selfSigning, userID, mk) {
		keptSelfSigning = selfSigning
	}
	return keptMaster, keptSelfSigning
}
