package config

import (
	"strings"
	"testing"
	"time"
)

func TestFederationAPIKeys(t *testing.T) {
	c, err := LoadBytes([]byte(`federation_api:
  disable_tls_validation: true
  key_validity_period: 24h
  old_verify_keys:
    - key_id: "ed25519:old"
      public_key: "Noi6WqcDj0QmPxCNQqgezwTlBKrfqehY1u2FyWP9uYw"
      expired_ts: 1576767829750
  key_perspectives:
    - server_name: matrix.org
      keys:
        - key_id: "ed25519:auto"
          public_key: "Noi6WqcDj0QmPxCNQqgezwTlBKrfqehY1u2FyWP9uYw"
`), []string{"DENDRITE_FEDERATION_API_HTTPS_BIND_ADDRESS=:8448", "DENDRITE_FEDERATION_API_TLS_CERT=c.pem", "DENDRITE_FEDERATION_API_TLS_KEY=k.pem"})
	if err != nil {
		t.Fatal(err)
	}
	f := c.FederationAPI
	if !f.DisableTLSValidation || time.Duration(f.KeyValidityPeriod) != 24*time.Hour || len(f.OldVerifyKeys) != 1 ||
		len(f.KeyPerspectives) != 1 || f.HTTPSBindAddress != ":8448" || f.TLSKey != "k.pem" {
		t.Fatalf("unexpected federation_api %+v", f)
	}
	_, err = LoadBytes([]byte(`federation_api:
  key_validity_period: 1m
  https_bind_address: ":8448"
  old_verify_keys: [{key_id: "rsa:1", public_key: "short", expired_ts: 0}]
  key_perspectives: [{server_name: "", keys: []}]
`), nil)
	for _, path := range []string{"federation_api.key_validity_period", "federation_api.tls_cert", "federation_api.old_verify_keys[0].key_id",
		"federation_api.old_verify_keys[0].public_key", "federation_api.old_verify_keys[0].expired_ts",
		"federation_api.key_perspectives[0].server_name", "federation_api.key_perspectives[0].keys"} {
		if err == nil || !strings.Contains(err.Error(), path+":") {
			t.Errorf("missing error for %s in %v", path, err)
		}
	}
	// A list of structures cannot come from the environment: an error, not a panic.
	if _, err = LoadBytes(nil, []string{"DENDRITE_FEDERATION_API_OLD_VERIFY_KEYS=x"}); err == nil {
		t.Error("an environment override of old_verify_keys was accepted")
	}
}
