// Package e2e holds the end-to-end stories that every deployment must pass, driven with a
// real Matrix client (mautrix-go) over loopback HTTP: the monolith (cmd/dendrite) and the
// polylith (cmd/devcluster) run the same stories against their own processes.
package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-org/dendrite/internal/freeport"
)

// Homeserver is a deployment under test.
type Homeserver interface {
	// URL is the client API's base URL.
	URL() string
	// Restart stops the server's processes and starts them again on the same storage;
	// clients keep their tokens and sync positions. URL may change.
	Restart(t *testing.T)
}

// FreeAddr is a free loopback address.
func FreeAddr(t testing.TB) string {
	t.Helper()
	addr, err := freeport.Addr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// WriteConfig writes a config with only the keys of the deployment contract (server name,
// data directory, open and shared-secret registration, global.deny_networks: [] as a
// harness on loopback sets it) and returns its path.
func WriteConfig(t *testing.T, dataDir string) string {
	t.Helper()
	path := filepath.Join(dataDir, "test.yaml")
	cfg := fmt.Sprintf("global:\n  server_name: e2e.test\n  data_dir: %s\n  deny_networks: []\nclient_api:\n  registration_disabled: false\n  registration_shared_secret: s3cret\n  rate_limiting:\n    enabled: false\n", dataDir)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// Client is a client without an account on the server at baseURL.
func Client(t testing.TB, baseURL string) *mautrix.Client {
	t.Helper()
	c, err := mautrix.NewClient(baseURL, "", "")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Register creates an account with open registration and returns its logged-in client.
func Register(t testing.TB, baseURL, name string) *mautrix.Client {
	t.Helper()
	c := Client(t, baseURL)
	res, err := c.RegisterDummy(context.Background(), &mautrix.ReqRegister[any]{Username: name, Password: "password-" + name})
	if err != nil {
		t.Fatalf("register %s: %v", name, err)
	}
	c.UserID, c.AccessToken, c.DeviceID = res.UserID, res.AccessToken, res.DeviceID
	return c
}

// Timeline collects the events a client sees in one room via /sync.
type Timeline struct {
	Since  string
	Events []*event.Event
}

// Sync syncs once from the last position and collects the room's timeline events.
func (tl *Timeline) Sync(t *testing.T, c *mautrix.Client, roomID id.RoomID) *mautrix.RespSync {
	t.Helper()
	res, err := c.SyncRequest(context.Background(), 0, tl.Since, "", false, "")
	if err != nil {
		t.Fatalf("sync: %v", err)
	}
	tl.Since = res.NextBatch
	if room := res.Rooms.Join[roomID]; room != nil {
		tl.Events = append(tl.Events, room.Timeline.Events...)
	}
	if room := res.Rooms.Leave[roomID]; room != nil {
		tl.Events = append(tl.Events, room.Timeline.Events...)
	}
	return res
}

// Bodies are the bodies of the collected m.room.message events, in order.
func (tl *Timeline) Bodies() []string {
	var out []string
	for _, e := range tl.Events {
		if e.Type == event.EventMessage {
			out = append(out, e.Content.Raw["body"].(string))
		}
	}
	return out
}

// WantErrCode fails unless err is a Matrix error answer with the HTTP status and code.
func WantErrCode(t *testing.T, err error, status int, code string) {
	t.Helper()
	var httpErr mautrix.HTTPError
	if !errors.As(err, &httpErr) || httpErr.Response == nil {
		t.Fatalf("want HTTP %d %s, got %v", status, code, err)
	}
	if httpErr.Response.StatusCode != status || httpErr.RespError == nil || httpErr.RespError.ErrCode != code {
		t.Fatalf("want HTTP %d %s, got %d %+v", status, code, httpErr.Response.StatusCode, httpErr.RespError)
	}
}

// MustParse parses a URL.
func MustParse(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// Binary is a package a TestMain builds for its tests: Package relative to the test's
// working directory, built into a temporary file named Name whose path goes to *Path.
type Binary struct {
	Name    string
	Package string
	Path    *string
}

// RunWithBinary is a TestMain body: it builds the package in the working directory into a
// temporary binary named name, runs the tests with its path, removes it and exits.
func RunWithBinary(m *testing.M, name string, path *string) {
	RunWithBinaries(m, Binary{Name: name, Package: ".", Path: path})
}

// RunWithBinaries is RunWithBinary for several packages, each built once for every test of
// the package (a build per test costs minutes of CPU when many run).
func RunWithBinaries(m *testing.M, bins ...Binary) {
	dir, err := os.MkdirTemp("", "e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for _, b := range bins {
		*b.Path = filepath.Join(dir, b.Name)
		if out, err := exec.Command("go", "build", "-o", *b.Path, b.Package).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", b.Name, err, out)
			_ = os.RemoveAll(dir) // best effort: the directory holds only the binaries
			os.Exit(1)
		}
	}
	code := m.Run()
	_ = os.RemoveAll(dir) // best effort: the directory holds only the binaries
	os.Exit(code)
}

// TLSCert writes a self-signed certificate for 127.0.0.1, ::1 and localhost (valid for a
// day) and its key into dir, as PEM files, and returns their paths.
func TLSCert(t testing.TB, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err = os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err = os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// UsersInRoom registers n users and joins them to a new public room created by the first,
// 8 requests at a time.
func UsersInRoom(t testing.TB, baseURL, prefix string, n int) ([]*mautrix.Client, id.RoomID) {
	t.Helper()
	users := make([]*mautrix.Client, n)
	var g errgroup.Group
	g.SetLimit(8)
	for i := range users {
		g.Go(func() error {
			users[i] = Register(t, baseURL, fmt.Sprintf("%s%d", prefix, i))
			return nil
		})
	}
	_ = g.Wait() // Register fails the test itself
	ctx := context.Background()
	created, err := users[0].CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range users[1:] {
		g.Go(func() error {
			_, err := u.JoinRoomByID(ctx, created.RoomID)
			return err
		})
	}
	if err = g.Wait(); err != nil {
		t.Fatal(err)
	}
	return users, created.RoomID
}
