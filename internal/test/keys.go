package test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
)

// DeviceKeys is a test device's ed25519 identity: it signs its own DeviceKeys object and
// one-time keys as an Olm device would, without Olm.
type DeviceKeys struct {
	UserID   string
	DeviceID string
	Private  ed25519.PrivateKey
}

// NewDeviceKeys makes a device identity with a fresh ed25519 key.
func NewDeviceKeys(t testing.TB, userID, deviceID string) *DeviceKeys {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &DeviceKeys{UserID: userID, DeviceID: deviceID, Private: priv}
}

// Ed25519 is the device's public key, unpadded base64.
func (d *DeviceKeys) Ed25519() string {
	return base64.RawStdEncoding.EncodeToString(d.Private.Public().(ed25519.PublicKey))
}

// Sign signs obj (a JSON object) as the device: signatures[user_id]["ed25519:<device_id>"].
func (d *DeviceKeys) Sign(t testing.TB, obj any) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	signed, err := gomatrixserverlib.SignJSON(d.UserID, gomatrixserverlib.KeyID("ed25519:"+d.DeviceID), d.Private, b)
	if err != nil {
		t.Fatal(err)
	}
	return signed
}

// JSON is the device's signed DeviceKeys object.
func (d *DeviceKeys) JSON(t testing.TB) json.RawMessage {
	t.Helper()
	return d.Sign(t, map[string]any{
		"user_id": d.UserID, "device_id": d.DeviceID,
		"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys":       map[string]string{"ed25519:" + d.DeviceID: d.Ed25519(), "curve25519:" + d.DeviceID: d.Ed25519()},
	})
}

// OneTimeKey is a signed_curve25519 key object signed by the device (a random value stands
// in for the curve25519 key); fallback marks a fallback key.
func (d *DeviceKeys) OneTimeKey(t testing.TB, fallback bool) json.RawMessage {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	obj := map[string]any{"key": base64.RawStdEncoding.EncodeToString(b)}
	if fallback {
		obj["fallback"] = true
	}
	return d.Sign(t, obj)
}

// CrossSigningKey is a test user's cross-signing key pair of one usage (master,
// self_signing or user_signing).
type CrossSigningKey struct {
	UserID  string
	Usage   string
	Private ed25519.PrivateKey
}

// NewCrossSigningKey makes a cross-signing key with a fresh ed25519 key.
func NewCrossSigningKey(t testing.TB, userID, usage string) *CrossSigningKey {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &CrossSigningKey{UserID: userID, Usage: usage, Private: priv}
}

// Public is the key's public key, unpadded base64 (also its key ID after "ed25519:").
func (k *CrossSigningKey) Public() string {
	return base64.RawStdEncoding.EncodeToString(k.Private.Public().(ed25519.PublicKey))
}

// Sign signs obj (a JSON object) with this key: signatures[user_id]["ed25519:<public>"].
func (k *CrossSigningKey) Sign(t testing.TB, obj []byte) json.RawMessage {
	t.Helper()
	signed, err := gomatrixserverlib.SignJSON(k.UserID, gomatrixserverlib.KeyID("ed25519:"+k.Public()), k.Private, obj)
	if err != nil {
		t.Fatal(err)
	}
	return signed
}

// JSON is the CrossSigningKey object, signed by signer when it is not nil (the master key
// signs the self-signing and user-signing keys).
func (k *CrossSigningKey) JSON(t testing.TB, signer *CrossSigningKey) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(map[string]any{"user_id": k.UserID, "usage": []string{k.Usage},
		"keys": map[string]string{"ed25519:" + k.Public(): k.Public()}})
	if err != nil {
		t.Fatal(err)
	}
	if signer == nil {
		return b
	}
	return signer.Sign(t, b)
}
