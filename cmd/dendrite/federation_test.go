package main

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/fedclient"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/internal/test/e2e"
)

// fedServer is a monolith with a TLS federation listener whose server name is
// "127.0.0.1:<TLS port>", configured with nothing but that, its data directory, open
// registration, federation_api.disable_tls_validation and global.deny_networks: [] (its
// peers live on loopback): the contract outside harnesses rely on.
type fedServer struct {
	*server
	name    spec.ServerName
	fedURL  string
	dataDir string
}

func startFedServer(t testing.TB) *fedServer {
	t.Helper()
	return startFedServerWith(t, "", "")
}

// startFedServerWith is startFedServer with global.database.connection_string set to dsn
// (when not empty: every component's database but the embedded log's) and extra YAML
// appended to the config (top-level sections not otherwise set, such as user_api).
func startFedServerWith(t testing.TB, dsn, extra string) *fedServer {
	t.Helper()
	tlsAddr := e2e.FreeAddr(t)
	return startFed(t, tlsAddr, tlsAddr, dsn, extra)
}

// onEachEngine runs fn as the subtests "sqlite" and "postgres", with newDSN giving the
// database of one server on that engine for startFedServerWith: "" on SQLite (the server's
// own files), a new PostgreSQL database each call otherwise.
func onEachEngine(t *testing.T, fn func(t *testing.T, newDSN func() string)) {
	t.Run("sqlite", func(t *testing.T) { fn(t, func() string { return "" }) })
	t.Run("postgres", func(t *testing.T) { fn(t, func() string { return test.PostgresDSN(t) }) })
}

// startFedServerNamed starts a fedServer whose TLS listener is on tlsAddr and whose server
// name is name (another address, such as a proxy's, that reaches tlsAddr).
func startFedServerNamed(t testing.TB, name, tlsAddr string) *fedServer {
	t.Helper()
	return startFed(t, name, tlsAddr, "", "")
}

func startFed(t testing.TB, name, tlsAddr, dsn, extra string) *fedServer {
	t.Helper()
	dir := t.TempDir()
	cert, key := e2e.TLSCert(t, dir)
	db := ""
	if dsn != "" {
		db = fmt.Sprintf("  database:\n    connection_string: %q\n", dsn)
	}
	cfg := fmt.Sprintf("global:\n  server_name: %q\n  data_dir: %s\n  deny_networks: []\n%sclient_api:\n  registration_disabled: false\n  guests_disabled: false\n  rate_limiting:\n    enabled: false\nfederation_api:\n  disable_tls_validation: true\n%s", name, dir, db, extra)
	path := filepath.Join(dir, "fed.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	s := &server{t: t, config: path, args: []string{"--https-bind-address", tlsAddr, "--tls-cert", cert, "--tls-key", key}}
	s.start(t)
	t.Cleanup(s.stop)
	return &fedServer{server: s, name: spec.ServerName(name), fedURL: "https://" + tlsAddr, dataDir: dir}
}

// insecure is an HTTPS client for the self-signed test certificates.
var insecure = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} // nolint: gosec // test certificates

func getJSON(t *testing.T, url string, out any) int {
	t.Helper()
	res, err := insecure.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close() // nolint: errcheck // read-only
	b, _ := io.ReadAll(res.Body)
	if out != nil && res.StatusCode == http.StatusOK {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s: %v: %s", url, err, b)
		}
	}
	if res.StatusCode != http.StatusOK {
		t.Logf("%s: %d %s", url, res.StatusCode, b)
	}
	return res.StatusCode
}

// TestMonolithsFederate starts two monoliths over loopback TLS: each publishes its keys,
// one is the other's notary, and a request signed with one's key is accepted by the other,
// which fetches the key over TLS; unsigned requests get 401.
func TestMonolithsFederate(t *testing.T) {
	a, b := startFedServer(t), startFedServer(t)
	ctx := context.Background()

	// Keys over TLS and over the plain HTTP listener are the same signed document.
	var keys gomatrixserverlib.ServerKeys
	if getJSON(t, b.fedURL+"/_matrix/key/v2/server", &keys) != http.StatusOK {
		t.Fatal("B's key server over TLS")
	}
	if checks, _ := gomatrixserverlib.CheckKeys(b.name, time.Now(), keys); !checks.AllChecksOK {
		t.Fatalf("B's keys: %+v", checks)
	}
	if res, err := http.Get(b.URL() + "/_matrix/key/v2/server"); err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("B's key server over plain HTTP: %v %v", res, err)
	}

	// A as notary for B: B's response signed by B and by A.
	var notary struct {
		ServerKeys []json.RawMessage `json:"server_keys"`
	}
	if getJSON(t, a.fedURL+"/_matrix/key/v2/query/"+string(b.name), &notary) != http.StatusOK || len(notary.ServerKeys) != 1 {
		t.Fatalf("notary answer: %+v", notary)
	}
	var aKeys gomatrixserverlib.ServerKeys
	getJSON(t, a.fedURL+"/_matrix/key/v2/server", &aKeys)
	for signer, sk := range map[spec.ServerName]gomatrixserverlib.ServerKeys{a.name: aKeys, b.name: keys} {
		for keyID, vk := range sk.VerifyKeys {
			if err := gomatrixserverlib.VerifyJSON(string(signer), keyID, ed25519.PublicKey(vk.Key), notary.ServerKeys[0]); err != nil {
				t.Fatalf("notary answer not signed by %s: %v", signer, err)
			}
		}
	}

	// A request signed with B's key reaches A's profile endpoint.
	alice := e2e.Register(t, a.URL(), "alice")
	if err := alice.SetDisplayName(ctx, "Alice of A"); err != nil {
		t.Fatal(err)
	}
	keyID, key, err := config.LoadOrGenerateKey(filepath.Join(b.dataDir, "matrix_key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	asB := fedclient.New(fedclient.Options{ServerName: b.name, KeyID: keyID, PrivateKey: key, SkipVerify: true})
	defer asB.CloseIdleConnections()
	p, err := asB.LookupProfile(ctx, b.name, a.name, string(alice.UserID), "")
	if err != nil || p.DisplayName != "Alice of A" {
		t.Fatalf("signed profile query: %+v %v", p, err)
	}
	if v, err := asB.GetVersion(ctx, a.name); err != nil || v.Server.Name != "Dendrite" {
		t.Fatalf("version: %+v %v", v, err)
	}
	url := a.fedURL + "/_matrix/federation/v1/query/profile?user_id=" + string(alice.UserID)
	if code := getJSON(t, url, nil); code != http.StatusUnauthorized {
		t.Fatalf("unsigned request: %d, want 401", code)
	}
	b.stop() // the log is complete (and no longer written) once the process has exited
	if !strings.Contains(b.logs.String(), "disable_tls_validation") {
		t.Fatalf("no warning about disable_tls_validation in the log:\n%s", b.logs)
	}
}
