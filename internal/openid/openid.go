// Package openid issues and checks the OpenID tokens of the client-server API's
// POST /user/{userId}/openid/request_token, which a third party exchanges for the user's ID at
// the federation API's GET /openid/userinfo. A token is self-contained: the user ID and the
// expiry, authenticated with an HMAC-SHA256 under a key derived from the server's signing
// key, so the clientapi that issues it and the federationapi that checks it share no table.
// The token authorises nothing else: client access tokens are random and looked up by hash,
// so an OpenID token never names a device.
package openid

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"strconv"
	"strings"
	"time"
)

// Lifetime is how long a token is valid after it was issued (expires_in).
const Lifetime = time.Hour

// keyLabel separates the HMAC key from every other use of the signing key's seed.
const keyLabel = "dendrite openid token v1"

// Tokens issues and verifies tokens under one server's key.
type Tokens struct {
	key []byte
}

// New derives the token key from the server's signing key.
func New(signingKey ed25519.PrivateKey) *Tokens {
	mac := hmac.New(sha256.New, signingKey.Seed())
	mac.Write([]byte(keyLabel))
	return &Tokens{key: mac.Sum(nil)}
}

// Issue makes a token for userID valid for Lifetime from now.
func (t *Tokens) Issue(userID string, now time.Time) string {
	payload := strconv.FormatInt(now.Add(Lifetime).UnixMilli(), 10) + "|" + userID
	enc := base64.RawURLEncoding
	return enc.EncodeToString([]byte(payload)) + "." + enc.EncodeToString(t.sign(payload))
}

// Verify returns the user ID of a token this server issued that has not expired at now, and
// false for anything else.
func (t *Tokens) Verify(token string, now time.Time) (string, bool) {
	enc := base64.RawURLEncoding
	p, m, found := strings.Cut(token, ".")
	if !found {
		return "", false
	}
	payload, err := enc.DecodeString(p)
	if err != nil {
		return "", false
	}
	mac, err := enc.DecodeString(m)
	if err != nil || !hmac.Equal(mac, t.sign(string(payload))) {
		return "", false
	}
	expiry, userID, found := strings.Cut(string(payload), "|")
	if !found {
		return "", false
	}
	ms, err := strconv.ParseInt(expiry, 10, 64)
	if err != nil || now.UnixMilli() >= ms {
		return "", false
	}
	return userID, true
}

func (t *Tokens) sign(payload string) []byte {
	mac := hmac.New(sha256.New, t.key)
	mac.Write([]byte(payload))
	return mac.Sum(nil)
}
