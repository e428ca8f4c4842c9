package mediaapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/mux"
	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/httputil"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/mediaapi"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

const serverName = "media.test"

// harness is a mediaapi on a real database and file store behind real HTTP. Access tokens
// resolve through a table standing in for the userapi (as syncapi's harness does); the
// end-to-end tests in internal/setup go through the real one.
type harness struct {
	t    *testing.T
	srv  *httptest.Server
	db   *sqlutil.DB
	dir  string
	cfg  *config.MediaAPI
	mu   sync.Mutex
	gone int // connections closed, each after its handler returned
}

func newHarness(t *testing.T, db *sqlutil.DB, change func(*config.MediaAPI)) *harness {
	t.Helper()
	return newHarnessIn(t, db, filepath.Join(t.TempDir(), "media"), change)
}

// newHarnessIn is newHarness with its file store in dir.
func newHarnessIn(t *testing.T, db *sqlutil.DB, dir string, change func(*config.MediaAPI)) *harness {
	t.Helper()
	return newHarnessDeps(t, db, dir, change, nil)
}

// newHarnessDeps is newHarnessIn with deps changing the component's dependencies.
func newHarnessDeps(t *testing.T, db *sqlutil.DB, dir string, change func(*config.MediaAPI), deps func(*mediaapi.Deps)) *harness {
	t.Helper()
	cfg := config.Defaults().MediaAPI
	if change != nil {
		change(&cfg)
	}
	h := &harness{t: t, db: db, dir: dir, cfg: &cfg}
	logger := logrus.New()
	logger.SetLevel(logrus.WarnLevel)
	d := mediaapi.Deps{Cfg: &cfg, ServerName: serverName, DB: db, BasePath: h.dir, DeviceLookup: lookup, Logger: logrus.NewEntry(logger)}
	if deps != nil {
		deps(&d)
	}
	m, err := mediaapi.New(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	router := mux.NewRouter().UseEncodedPath()
	(&httputil.Server{Component: "mediaapi", Logger: logrus.NewEntry(logger), MaxBodyBytes: cfg.MaxFileSizeBytes}).Register(router, m.Routes())
	h.srv = httptest.NewUnstartedServer(router)
	h.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			h.mu.Lock()
			h.gone++
			h.mu.Unlock()
		}
	}
	h.srv.Start()
	t.Cleanup(h.srv.Close)
	return h
}

func lookup(_ context.Context, token string) (*uapi.Device, error) {
	switch token {
	case "alice":
		return &uapi.Device{UserID: "@alice:" + serverName, DeviceID: "A"}, nil
	case "bob":
		return &uapi.Device{UserID: "@bob:" + serverName, DeviceID: "B"}, nil
	}
	return nil, matrixerr.UnknownToken("unknown token")
}

// do sends a request with token ("" for none) and returns the response, body read.
func (h *harness) do(method, path, token, contentType string, body []byte) (*http.Response, []byte) {
	h.t.Helper()
	req, err := http.NewRequest(method, h.srv.URL+path, bytes.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer res.Body.Close() // nolint: errcheck // read below
	b, err := io.ReadAll(res.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return res, b
}

// upload stores content and returns its mxc URI's server name and media ID path.
func (h *harness) upload(token, contentType, name string, content []byte) string {
	h.t.Helper()
	path := "/_matrix/media/v3/upload"
	if name != "" {
		path += "?filename=" + url.QueryEscape(name)
	}
	res, b := h.do(http.MethodPost, path, token, contentType, content)
	if res.StatusCode != http.StatusOK {
		h.t.Fatalf("upload: %d %s", res.StatusCode, b)
	}
	var out struct {
		ContentURI string `json:"content_uri"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		h.t.Fatal(err)
	}
	rest, ok := strings.CutPrefix(out.ContentURI, "mxc://"+serverName+"/")
	if !ok {
		h.t.Fatalf("content_uri %q", out.ContentURI)
	}
	return serverName + "/" + rest
}

func wantError(t *testing.T, what string, res *http.Response, body []byte, status int, code string) {
	t.Helper()
	var e struct {
		ErrCode string `json:"errcode"`
	}
	_ = json.Unmarshal(body, &e) // an empty errcode fails below
	if res.StatusCode != status || e.ErrCode != code {
		t.Errorf("%s: got %d %s, want %d %s", what, res.StatusCode, body, status, code)
	}
}

// storedFiles lists the files of the content store and of its temporary directory.
func (h *harness) storedFiles() (blobs, tmp []string) {
	h.t.Helper()
	err := filepath.WalkDir(h.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if strings.HasPrefix(p, filepath.Join(h.dir, "tmp")) {
			tmp = append(tmp, p)
		} else {
			blobs = append(blobs, p)
		}
		return nil
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return blobs, tmp
}

func (h *harness) rows() int {
	h.t.Helper()
	var n int
	if err := h.db.QueryRow("SELECT COUNT(*) FROM mediaapi_media").Scan(&n); err != nil {
		h.t.Fatal(err)
	}
	return n
}

// TestUploadDownload: an upload comes back byte-identical with its type, name and the
// spec's security headers through the authenticated and the legacy endpoints; the
// authenticated ones refuse requests without a token; identical uploads share one file,
// created 0600 in directories 0700.
func TestUploadDownload(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := newHarness(t, db, nil)
		content := []byte("hello media\x00\xff")
		ref := h.upload("alice", "text/plain; charset=utf-8", "grüße.txt", content)
		for _, c := range []struct{ path, token, disposition string }{
			{"/_matrix/client/v1/media/download/" + ref, "bob", `inline; filename*=utf-8''gr%C3%BC%C3%9Fe.txt`},
			{"/_matrix/client/v1/media/download/" + ref + "/other.txt", "bob", `inline; filename=other.txt`},
			{"/_matrix/media/v3/download/" + ref, "", `inline; filename*=utf-8''gr%C3%BC%C3%9Fe.txt`},
			{"/_matrix/media/r0/download/" + ref + "/x.txt", "", `inline; filename=x.txt`},
		} {
			res, b := h.do(http.MethodGet, c.path, c.token, "", nil)
			if res.StatusCode != http.StatusOK || !bytes.Equal(b, content) {
				t.Fatalf("%s: %d %q", c.path, res.StatusCode, b)
			}
			for k, v := range map[string]string{
				"Content-Type": "text/plain; charset=utf-8", "Content-Disposition": c.disposition, "X-Content-Type-Options": "nosniff",
				"Content-Length": fmt.Sprint(len(content)), "Cross-Origin-Resource-Policy": "cross-origin",
			} {
				if got := res.Header.Get(k); got != v {
					t.Errorf("%s: %s = %q, want %q", c.path, k, got, v)
				}
			}
			if !strings.HasPrefix(res.Header.Get("Content-Security-Policy"), "sandbox; default-src 'none'") {
				t.Errorf("%s: Content-Security-Policy %q", c.path, res.Header.Get("Content-Security-Policy"))
			}
		}
		res, b := h.do(http.MethodGet, "/_matrix/client/v1/media/download/"+ref, "", "", nil)
		wantError(t, "download without a token", res, b, http.StatusUnauthorized, "M_MISSING_TOKEN")
		res, b = h.do(http.MethodGet, "/_matrix/client/v1/media/config", "", "", nil)
		wantError(t, "config without a token", res, b, http.StatusUnauthorized, "M_MISSING_TOKEN")
		res, b = h.do(http.MethodPost, "/_matrix/media/v3/upload", "", "text/plain", content)
		wantError(t, "upload without a token", res, b, http.StatusUnauthorized, "M_MISSING_TOKEN")
		res, b = h.do(http.MethodGet, "/_matrix/client/v1/media/config", "alice", "", nil)
		if res.StatusCode != http.StatusOK || string(b) != fmt.Sprintf(`{"m.upload.size":%d}`, h.cfg.MaxFileSizeBytes) {
			t.Errorf("config: %d %s", res.StatusCode, b)
		}

		// HTML is never inline; the same bytes again share the stored file.
		html := h.upload("bob", "text/html", "", content)
		res, _ = h.do(http.MethodGet, "/_matrix/client/v1/media/download/"+html, "alice", "", nil)
		if d := res.Header.Get("Content-Disposition"); d != "attachment" {
			t.Errorf("text/html served with Content-Disposition %q", d)
		}
		blobs, tmp := h.storedFiles()
		if len(blobs) != 1 || len(tmp) != 0 {
			t.Errorf("identical uploads: files %v, temporary %v", blobs, tmp)
		}
		for p := blobs[0]; p != filepath.Dir(h.dir); p = filepath.Dir(p) {
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			want := fs.FileMode(0o600)
			if fi.IsDir() {
				want = 0o700
			}
			if fi.Mode().Perm() != want {
				t.Errorf("%s: mode %o, want %o", p, fi.Mode().Perm(), want)
			}
		}
	})
}

// TestBadMediaRequests: unknown media is 404 M_NOT_FOUND; media IDs with characters the
// spec does not allow are 400; an upload over max_file_size_bytes is 413 M_TOO_LARGE and
// stores nothing.
func TestBadMediaRequests(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := newHarness(t, db, func(c *config.MediaAPI) { c.MaxFileSizeBytes = 4096 })
		for _, c := range []struct {
			path    string
			status  int
			errcode string
		}{
			{"/_matrix/client/v1/media/download/" + serverName + "/unknownID", 404, "M_NOT_FOUND"},
			{"/_matrix/client/v1/media/download/" + serverName + "/a.b", 400, "M_INVALID_PARAM"},
			{"/_matrix/client/v1/media/download/" + serverName + "/a%2Fb", 400, "M_INVALID_PARAM"},
			{"/_matrix/client/v1/media/download/" + serverName + "/%2E%2E", 400, "M_INVALID_PARAM"},
			{"/_matrix/client/v1/media/download/" + serverName + "/a%00b", 400, "M_INVALID_PARAM"},
			{"/_matrix/client/v1/media/download/bad%20server/abc", 400, "M_INVALID_PARAM"},
			{"/_matrix/media/v3/download/" + serverName + "/unknownID", 404, "M_NOT_FOUND"},
			{"/_matrix/client/v1/media/thumbnail/" + serverName + "/unknownID?width=32&height=32", 404, "M_NOT_FOUND"},
			{"/_matrix/client/v1/media/thumbnail/" + serverName + "/unknownID?width=-3&height=32", 400, "M_INVALID_PARAM"},
			{"/_matrix/client/v1/media/thumbnail/" + serverName + "/unknownID?width=3&height=3&method=zoom", 400, "M_INVALID_PARAM"},
		} {
			res, b := h.do(http.MethodGet, c.path, "alice", "", nil)
			wantError(t, c.path, res, b, c.status, c.errcode)
		}
		res, b := h.do(http.MethodPost, "/_matrix/media/v3/upload", "alice", "application/octet-stream", make([]byte, 4097))
		wantError(t, "upload over the limit", res, b, http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
		res, b = h.do(http.MethodPost, "/_matrix/media/v3/upload?filename=a/b", "alice", "text/plain", []byte("x"))
		wantError(t, "file name with a slash", res, b, http.StatusBadRequest, "M_INVALID_PARAM")
		res, b = h.do(http.MethodPost, "/_matrix/media/v3/upload", "alice", "not a type;;", []byte("x"))
		wantError(t, "bad Content-Type", res, b, http.StatusBadRequest, "M_UNKNOWN")
		if blobs, tmp := h.storedFiles(); len(blobs) != 0 || len(tmp) != 0 || h.rows() != 0 {
			t.Errorf("refused uploads left files %v, temporary %v, %d rows", blobs, tmp, h.rows())
		}
	})
}

// TestUploadCutOff: an upload whose body ends before its Content-Length (the client died
// halfway) leaves no media row, no file and no temporary file.
func TestUploadCutOff(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := newHarness(t, db, nil)
		conn, err := net.Dial("tcp", h.srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		_, err = fmt.Fprintf(conn, "POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer alice\r\n"+
			"Content-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n%s", bytes.Repeat([]byte("z"), 50000))
		if err != nil {
			t.Fatal(err)
		}
		if err = conn.Close(); err != nil {
			t.Fatal(err)
		}
		// The server closes a connection only after its handler returned.
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			h.mu.Lock()
			gone := h.gone
			h.mu.Unlock()
			if gone > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the cut-off upload's connection never closed")
			}
		}
		if blobs, tmp := h.storedFiles(); len(blobs) != 0 || len(tmp) != 0 || h.rows() != 0 {
			t.Errorf("cut-off upload left files %v, temporary %v, %d rows", blobs, tmp, h.rows())
		}
	})
}

// TestFreezeLegacyMedia: with media_api.freeze_legacy_media on, new media is served by
// the authenticated endpoints only; media stored before the freeze stays on both.
func TestFreezeLegacyMedia(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		before := newHarness(t, db, nil)
		old := before.upload("alice", "image/png", "", []byte("old"))
		h := newHarnessIn(t, db, before.dir, func(c *config.MediaAPI) { c.FreezeLegacyMedia = true })
		fresh := h.upload("alice", "image/png", "", []byte("new"))
		for _, c := range []struct {
			path, token string
			status      int
		}{
			{"/_matrix/media/v3/download/" + old, "", 200},
			{"/_matrix/client/v1/media/download/" + old, "bob", 200},
			{"/_matrix/media/v3/download/" + fresh, "", 404},
			{"/_matrix/media/v3/thumbnail/" + fresh + "?width=32&height=32", "", 404},
			{"/_matrix/client/v1/media/download/" + fresh, "bob", 200},
		} {
			if res, b := h.do(http.MethodGet, c.path, c.token, "", nil); res.StatusCode != c.status {
				t.Errorf("%s: %d %s, want %d", c.path, res.StatusCode, b, c.status)
			}
		}
	})
}
