package config

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/matrix-org/dendrite/internal/privfs"
)

const pemType = "MATRIX PRIVATE KEY"

// LoadOrGenerateKey reads the server's ed25519 signing key (a PEM "MATRIX PRIVATE KEY" block
// holding the 32-byte seed, with a "Key-ID" header, as Synapse and Dendrite write it), or
// generates and writes one with a random key ID if the file does not exist (0600, in a
// directory created 0700; see privfs).
func LoadOrGenerateKey(path string) (gomatrixserverlib.KeyID, ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return generateKey(path)
	}
	if err != nil {
		return "", nil, err
	}
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			return "", nil, fmt.Errorf("%s holds no %s block", path, pemType)
		}
		if block.Type != pemType {
			continue
		}
		if len(block.Bytes) != ed25519.SeedSize {
			return "", nil, fmt.Errorf("%s: key seed must be %d bytes", path, ed25519.SeedSize)
		}
		keyID := block.Headers["Key-ID"]
		if keyID == "" {
			keyID = "ed25519:auto"
		}
		return gomatrixserverlib.KeyID(keyID), ed25519.NewKeyFromSeed(block.Bytes), nil
	}
}

func generateKey(path string) (gomatrixserverlib.KeyID, ed25519.PrivateKey, error) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", nil, err
	}
	const alnum = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	id := make([]byte, 6)
	for i := range id {
		n, err := rand.Int(rand.Reader, big.NewInt(int64(len(alnum))))
		if err != nil {
			return "", nil, err
		}
		id[i] = alnum[n.Int64()]
	}
	keyID := "ed25519:" + string(id)
	out := pem.EncodeToMemory(&pem.Block{Type: pemType, Headers: map[string]string{"Key-ID": keyID}, Bytes: key.Seed()})
	if err = privfs.WriteFile(path, out); err != nil {
		return "", nil, fmt.Errorf("write signing key: %w", err)
	}
	return gomatrixserverlib.KeyID(keyID), key, nil
}
