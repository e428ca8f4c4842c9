package mediaapi_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/outbound"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/mediaapi"
	"github.com/matrix-org/dendrite/mediaapi/internal"
)

// pageSite is an HTTP server on loopback serving a page with OpenGraph tags and a relative
// og:image, a redirect to another address, a page far larger than the preview limit
// (bigTotal bytes, of which it counts what it managed to write) and a 404.
type pageSite struct {
	srv     *httptest.Server
	png     []byte
	hits    atomic.Int64 // of /page.html
	written chan int64   // bytes of /big.html written, once its handler ended
}

const bigTotal = 64 << 20

func newPageSite(t *testing.T, redirectTo string) *pageSite {
	t.Helper()
	s := &pageSite{png: encode(t, "png", picture(279, 129)), written: make(chan int64, 1)}
	mux := http.NewServeMux()
	mux.HandleFunc("/page.html", func(w http.ResponseWriter, _ *http.Request) {
		s.hits.Add(1)
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, `<html prefix="og: http://ogp.me/ns#"><head><title>The Rock (1996)</title>
<meta property="og:title" content="The Rock" /><meta property="og:type" content="video.movie" />
<meta property="og:url" content="http://www.example.com/rock" /><meta property="og:image" content="img/rock.png" />
<meta property="og:title" content="ignored second title" /></head><body></body></html>`)
	})
	mux.HandleFunc("/img/rock.png", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "image/png")
		_, _ = w.Write(s.png) // the client's error shows
	})
	mux.HandleFunc("/latin1.html", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=iso-8859-1")
		fmt.Fprint(w, "<title>Caf\xe9</title>")
	})
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, redirectTo, http.StatusFound)
	})
	mux.HandleFunc("/big.html", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		n, _ := fmt.Fprint(w, "<html><head><title>Big</title>") // a failed write ends the loop below
		written := int64(n)
		chunk := bytes.Repeat([]byte("<!-- padding -->"), 4096)
		for written < bigTotal-200 {
			n, err := w.Write(chunk)
			written += int64(n)
			if err != nil {
				break
			}
		}
		n, _ = fmt.Fprint(w, `<meta property="og:description" content="after the limit"></head></html>`)
		s.written <- written + int64(n)
	})
	s.srv = httptest.NewServer(mux)
	t.Cleanup(s.srv.Close)
	return s
}

// allowLoopback is the default deny list without 127.0.0.0/8, plus deny.
func allowLoopback(t *testing.T, deny ...string) *outbound.Policy {
	t.Helper()
	nets := slices.DeleteFunc(slices.Clone(outbound.DefaultDenyNetworks), func(n string) bool { return n == "127.0.0.0/8" })
	p, err := outbound.NewPolicy(append(nets, deny...))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func previewHarness(t *testing.T, db *sqlutil.DB, deny *outbound.Policy) *harness {
	t.Helper()
	return newHarnessDeps(t, db, filepath.Join(t.TempDir(), "media"), func(c *config.MediaAPI) {
		c.URLPreview.Enabled = true
		c.URLPreview.MaxPageBytes = 64 << 10
	}, func(d *mediaapi.Deps) { d.Deny = deny })
}

func (h *harness) preview(path, token, pageURL string) (*http.Response, map[string]any) {
	h.t.Helper()
	res, b := h.do(http.MethodGet, path+"?url="+url.QueryEscape(pageURL), token, "", nil)
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		h.t.Fatalf("%s: %d %s", pageURL, res.StatusCode, b)
	}
	return res, out
}

// TestURLPreview: with the default deny list a page on loopback is refused (403); with
// loopback allowed it is previewed from its OpenGraph tags (the first of each wins), its
// relative og:image fetched and stored as our media (byte-identical, with its dimensions
// and size), through the authenticated and the legacy endpoint, and the second request is
// answered from the cache. A redirect into a denied address is refused; a page larger than
// max_page_bytes is read only that far (what is after the limit is absent, and the server
// could not write the whole page); a page in another charset is decoded; an error answer
// is 502.
func TestURLPreview(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		denied, err := net.Listen("tcp", "127.0.0.2:0")
		if err != nil {
			t.Skipf("no 127.0.0.2 on this machine: %v", err)
		}
		deniedSite := &httptest.Server{Listener: denied, Config: &http.Server{Handler: http.NotFoundHandler()}}
		deniedSite.Start()
		t.Cleanup(deniedSite.Close)
		site := newPageSite(t, deniedSite.URL+"/page.html")
		const authed, legacy = "/_matrix/client/v1/media/preview_url", "/_matrix/media/v3/preview_url"

		strict := previewHarness(t, db, mustPolicy(t, outbound.DefaultDenyNetworks))
		res, body := strict.preview(authed, "alice", site.srv.URL+"/page.html")
		if res.StatusCode != http.StatusForbidden || body["errcode"] != "M_FORBIDDEN" {
			t.Fatalf("default deny list: %d %v, want 403 M_FORBIDDEN", res.StatusCode, body)
		}
		if n := site.hits.Load(); n != 0 {
			t.Fatalf("the page was fetched %d times through the default deny list", n)
		}

		h := previewHarness(t, db, allowLoopback(t, "127.0.0.2/32"))
		res, body = h.preview(authed, "alice", site.srv.URL+"/page.html#fragment")
		if res.StatusCode != http.StatusOK {
			t.Fatalf("preview: %d %v", res.StatusCode, body)
		}
		for k, want := range map[string]any{"og:title": "The Rock", "og:type": "video.movie", "og:url": "http://www.example.com/rock",
			"og:image:type": "image/png", "og:image:width": 279.0, "og:image:height": 129.0, "matrix:image:size": float64(len(site.png))} {
			if body[k] != want {
				t.Errorf("%s = %v, want %v", k, body[k], want)
			}
		}
		ref, ok := strings.CutPrefix(fmt.Sprint(body["og:image"]), "mxc://")
		if !ok {
			t.Fatalf("og:image %v is not an mxc URI", body["og:image"])
		}
		if res, b := h.do(http.MethodGet, "/_matrix/client/v1/media/download/"+ref, "bob", "", nil); res.StatusCode != http.StatusOK || !bytes.Equal(b, site.png) {
			t.Fatalf("download of the preview's image: %d, %d bytes", res.StatusCode, len(b))
		}
		res, again := h.preview(legacy, "bob", site.srv.URL+"/page.html")
		if res.StatusCode != http.StatusOK || again["og:image"] != body["og:image"] || site.hits.Load() != 1 {
			t.Fatalf("second preview: %d %v, page fetched %d times; want the cached preview", res.StatusCode, again, site.hits.Load())
		}

		res, body = h.preview(authed, "alice", site.srv.URL+"/redirect")
		if res.StatusCode != http.StatusForbidden || body["errcode"] != "M_FORBIDDEN" {
			t.Fatalf("redirect into a denied address: %d %v, want 403 M_FORBIDDEN", res.StatusCode, body)
		}

		res, body = h.preview(authed, "alice", site.srv.URL+"/big.html")
		if res.StatusCode != http.StatusOK || body["og:title"] != "Big" || body["og:description"] != nil {
			t.Fatalf("oversized page: %d %v, want og:title Big and nothing after the limit", res.StatusCode, body)
		}
		if n := <-site.written; n >= bigTotal {
			t.Fatalf("the whole oversized page (%d bytes) was downloaded", n)
		}

		res, body = h.preview(authed, "alice", site.srv.URL+"/latin1.html")
		if res.StatusCode != http.StatusOK || body["og:title"] != "Café" {
			t.Fatalf("ISO-8859-1 page: %d %v, want og:title Café", res.StatusCode, body)
		}

		res, body = h.preview(authed, "alice", site.srv.URL+"/missing")
		if res.StatusCode != http.StatusBadGateway {
			t.Fatalf("a 404 page: %d %v, want 502", res.StatusCode, body)
		}
	})
}

func mustPolicy(t *testing.T, nets []string) *outbound.Policy {
	t.Helper()
	p, err := outbound.NewPolicy(nets)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestURLPreviewBadRequests: the spec's errors for bad input, 401 without a token, and 404
// M_UNRECOGNIZED while previews are off (the default).
func TestURLPreviewBadRequests(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		off := newHarness(t, db, nil)
		res, b := off.do(http.MethodGet, "/_matrix/client/v1/media/preview_url?url=https%3A%2F%2Fexample.com", "alice", "", nil)
		wantError(t, "previews off", res, b, http.StatusNotFound, "M_UNRECOGNIZED")

		h := previewHarness(t, db, mustPolicy(t, outbound.DefaultDenyNetworks))
		for _, c := range []struct {
			query, token string
			status       int
			code         string
		}{
			{"?url=https%3A%2F%2Fexample.com", "", http.StatusUnauthorized, "M_MISSING_TOKEN"},
			{"", "alice", http.StatusBadRequest, "M_MISSING_PARAM"},
			{"?url=ftp%3A%2F%2Fexample.com%2Fx", "alice", http.StatusBadRequest, "M_INVALID_PARAM"},
			{"?url=example.com", "alice", http.StatusBadRequest, "M_INVALID_PARAM"},
			{"?url=https%3A%2F%2Fuser%3Apw%40example.com", "alice", http.StatusBadRequest, "M_INVALID_PARAM"},
			{"?url=https%3A%2F%2F%2Fpath", "alice", http.StatusBadRequest, "M_INVALID_PARAM"},
			{"?url=https%3A%2F%2Fexample.com%2F" + strings.Repeat("a", 3000), "alice", http.StatusBadRequest, "M_INVALID_PARAM"},
			{"?url=https%3A%2F%2Fexample.com&ts=yesterday", "alice", http.StatusBadRequest, "M_INVALID_PARAM"},
		} {
			res, b := h.do(http.MethodGet, "/_matrix/client/v1/media/preview_url"+c.query, c.token, "", nil)
			wantError(t, c.query, res, b, c.status, c.code)
		}
	})
}

// TestParseHTML: OpenGraph properties from property= or name=, the first of each; <title>
// and the description meta as fallbacks only; values made valid UTF-8 and cut to 1000
// runes; a page cut off mid-tag parsed as far as it goes.
func TestParseHTML(t *testing.T) {
	long := strings.Repeat("é", 1500)
	for _, c := range []struct {
		name, page string
		want       internal.Preview
	}{
		{"og tags win", `<title>T</title><meta name="description" content="D"><meta property="og:title" content="OG"><meta property="OG:Description" content="OD">`,
			internal.Preview{"og:title": "OG", "og:description": "OD"}},
		{"fallbacks", `<html><head><title> Plain title </title><meta name="description" content="Desc"></head></html>`,
			internal.Preview{"og:title": "Plain title", "og:description": "Desc"}},
		{"name attribute", `<meta name="og:site_name" content="Site">`, internal.Preview{"og:site_name": "Site"}},
		{"first wins", `<meta property="og:title" content="one"><meta property="og:title" content="two">`, internal.Preview{"og:title": "one"}},
		{"invalid utf-8", "<meta property=\"og:title\" content=\"a\xffb\">", internal.Preview{"og:title": "a\uFFFDb"}},
		{"long value", `<meta property="og:title" content="` + long + `">`, internal.Preview{"og:title": strings.Repeat("é", 1000)}},
		{"cut off", `<title>Kept</title><meta property="og:title" cont`, internal.Preview{"og:title": "Kept"}},
		{"nothing", `not html at all`, internal.Preview{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := internal.ParseHTML(strings.NewReader(c.page))
			if fmt.Sprint(got) != fmt.Sprint(c.want) {
				t.Errorf("got %v, want %v", got, c.want)
			}
		})
	}
}
