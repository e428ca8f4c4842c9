package config

import (
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"strings"
	"time"
)

// FederationAPI configures the federation API: the server-server endpoints, the key server
// and notary, and the outbound federation client every component shares.
type FederationAPI struct {
	Database DatabaseOptions `yaml:"database"`
	// Listen is where the polylith's federationapi process serves /_matrix/federation and
	// /_matrix/key over plain HTTP, behind a proxy that terminates TLS.
	Listen      string      `yaml:"listen"`
	InternalAPI InternalAPI `yaml:"internal_api"`
	// HTTPSBindAddress, TLSCert and TLSKey make the monolith serve over TLS as well (the
	// --https-bind-address, --tls-cert and --tls-key flags set them); empty: no TLS listener.
	HTTPSBindAddress string `yaml:"https_bind_address"`
	TLSCert          string `yaml:"tls_cert"`
	TLSKey           string `yaml:"tls_key"`
	// DisableTLSValidation skips the verification of remote servers' TLS certificates on
	// outbound federation requests. Only for tests and local development.
	DisableTLSValidation bool `yaml:"disable_tls_validation"`
	// KeyValidityPeriod is how long our published key response is valid (valid_until_ts).
	KeyValidityPeriod Duration `yaml:"key_validity_period"`
	// RequestTimeout bounds every outbound federation request.
	RequestTimeout Duration `yaml:"request_timeout"`
	// MaxBodyBytes bounds inbound federation request bodies.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// OldVerifyKeys are our previous signing keys, published in old_verify_keys so that
	// events they signed stay verifiable.
	OldVerifyKeys []OldVerifyKey `yaml:"old_verify_keys"`
	// KeyPerspectives are notary servers asked for keys a server does not give us itself.
	KeyPerspectives []KeyPerspective `yaml:"key_perspectives"`
	// ReceivePresence accepts m.presence EDUs from other servers (with presence_server.enabled).
	ReceivePresence bool `yaml:"receive_presence"`
	// RateLimiting limits the authenticated requests of each origin server.
	RateLimiting ServerRateLimiting `yaml:"rate_limiting"`
}

// ServerRateLimiting configures a token bucket per origin server: per_second requests on
// average, bursts of up to burst. Requests over it get 429 M_LIMIT_EXCEEDED, which senders
// retry later.
type ServerRateLimiting struct {
	Enabled       bool     `yaml:"enabled"`
	PerSecond     float64  `yaml:"per_second"`
	Burst         int      `yaml:"burst"`
	ExemptServers []string `yaml:"exempt_servers"`
}

// OldVerifyKey is a retired signing key.
type OldVerifyKey struct {
	// KeyID is "ed25519:<version>".
	KeyID string `yaml:"key_id"`
	// PublicKey is the unpadded base64 public key, as in a key response.
	PublicKey string `yaml:"public_key"`
	// ExpiredTS is when the key stopped being used, in milliseconds since the epoch.
	ExpiredTS int64 `yaml:"expired_ts"`
}

// KeyPerspective is a trusted notary server and the keys its answers must be signed with.
type KeyPerspective struct {
	ServerName string           `yaml:"server_name"`
	Keys       []PerspectiveKey `yaml:"keys"`
}

// PerspectiveKey is one signing key of a notary server.
type PerspectiveKey struct {
	KeyID     string `yaml:"key_id"`
	PublicKey string `yaml:"public_key"`
}

func defaultFederationAPI() FederationAPI {
	return FederationAPI{
		Listen: ":8072", InternalAPI: InternalAPI{Listen: ":7777", Connect: "http://federationapi:7777"},
		KeyValidityPeriod: Duration(7 * 24 * time.Hour), RequestTimeout: Duration(30 * time.Second), MaxBodyBytes: 10 << 20,
		OldVerifyKeys: []OldVerifyKey{}, KeyPerspectives: []KeyPerspective{}, ReceivePresence: true,
		RateLimiting: ServerRateLimiting{Enabled: true, PerSecond: 50, Burst: 300, ExemptServers: []string{}},
	}
}

// DecodePublicKey decodes an ed25519 public key written in (unpadded or padded) base64.
func DecodePublicKey(s string) (ed25519.PublicKey, error) {
	b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil {
		return nil, err
	}
	if len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("want %d bytes, got %d", ed25519.PublicKeySize, len(b))
	}
	return ed25519.PublicKey(b), nil
}

func (f *FederationAPI) verify(bad func(path, problem string)) {
	if f.KeyValidityPeriod < Duration(time.Hour) {
		bad("federation_api.key_validity_period", "must be at least 1h (servers refetch keys that expire sooner)")
	}
	if f.RequestTimeout <= 0 {
		bad("federation_api.request_timeout", "must be positive")
	}
	if f.MaxBodyBytes < 65536 {
		bad("federation_api.max_body_bytes", "must be at least 65536 (one event)")
	}
	if rl := f.RateLimiting; rl.Enabled && (rl.PerSecond <= 0 || rl.Burst < 1) {
		bad("federation_api.rate_limiting", "per_second must be positive and burst at least 1")
	}
	if (f.TLSCert == "") != (f.TLSKey == "") || (f.HTTPSBindAddress != "" && f.TLSCert == "") {
		bad("federation_api.tls_cert", "https_bind_address needs both tls_cert and tls_key")
	}
	for i, k := range f.OldVerifyKeys {
		path := fmt.Sprintf("federation_api.old_verify_keys[%d]", i)
		checkKey(bad, path, k.KeyID, k.PublicKey)
		if k.ExpiredTS <= 0 {
			bad(path+".expired_ts", "must be the time the key stopped being used, in milliseconds")
		}
	}
	for i, p := range f.KeyPerspectives {
		path := fmt.Sprintf("federation_api.key_perspectives[%d]", i)
		if p.ServerName == "" {
			bad(path+".server_name", "must not be empty")
		}
		if len(p.Keys) == 0 {
			bad(path+".keys", "must list at least one key of the notary")
		}
		for j, k := range p.Keys {
			checkKey(bad, fmt.Sprintf("%s.keys[%d]", path, j), k.KeyID, k.PublicKey)
		}
	}
}

func checkKey(bad func(path, problem string), path, keyID, publicKey string) {
	if !strings.HasPrefix(keyID, "ed25519:") {
		bad(path+".key_id", "must start with ed25519:")
	}
	if _, err := DecodePublicKey(publicKey); err != nil {
		bad(path+".public_key", "must be an ed25519 public key in base64: "+err.Error())
	}
}
