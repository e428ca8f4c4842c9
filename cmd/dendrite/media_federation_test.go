package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/matrix-org/dendrite/internal/test/e2e"
)

// TestMonolithsRemoteMedia starts two monoliths over loopback TLS: bob of B downloads a
// file alice of A uploaded. B fetches it from A once over the federation media endpoint
// (signed, multipart answer), however many requests ask at the same time, caches it, and
// serves it byte-identical from its cache even after A stopped. Unknown remote media is
// 404 M_NOT_FOUND; A's federation endpoint refuses unsigned requests.
func TestMonolithsRemoteMedia(t *testing.T) {
	a, b := startFedServer(t), startFedServer(t)
	metrics := e2e.FreeAddr(t)
	a.stop()
	a.env = append(a.env, "DENDRITE_GLOBAL_METRICS_LISTEN="+metrics)
	a.start(t)
	ctx := context.Background()
	alice, bob := e2e.Register(t, a.URL(), "alice"), e2e.Register(t, b.URL(), "bob")
	content := make([]byte, 1<<20)
	_, _ = rand.Read(content) // crypto/rand never fails on Linux
	up, err := alice.UploadBytesWithName(ctx, content, "application/octet-stream", "data.bin")
	if err != nil {
		t.Fatal(err)
	}
	path := "/_matrix/client/v1/media/download/" + up.ContentURI.Homeserver + "/" + up.ContentURI.FileID
	get := func(token, p string) (int, []byte, http.Header) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, b.URL()+p, nil)
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close() // nolint: errcheck // read below
		body, err := io.ReadAll(res.Body)
		if err != nil {
			t.Fatal(err)
		}
		return res.StatusCode, body, res.Header
	}

	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for range 8 {
		wg.Go(func() {
			req, _ := http.NewRequest(http.MethodGet, b.URL()+path, nil) // a fixed valid URL
			req.Header.Set("Authorization", "Bearer "+bob.AccessToken)
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				errs <- err.Error()
				return
			}
			defer res.Body.Close() // nolint: errcheck // read below
			body, err := io.ReadAll(res.Body)
			if err != nil || res.StatusCode != http.StatusOK || !bytes.Equal(body, content) {
				errs <- fmt.Sprintf("concurrent download: %d, %d bytes, %v", res.StatusCode, len(body), err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	status, body, h := get(bob.AccessToken, path)
	if status != http.StatusOK || !bytes.Equal(body, content) || h.Get("Content-Disposition") != "attachment; filename=data.bin" {
		t.Fatalf("download from B: %d, %d bytes, %q", status, len(body), h.Get("Content-Disposition"))
	}
	if n := fetchesServed(t, metrics); n != 1 {
		t.Errorf("A served the media over federation %d times, want once", n)
	}
	status, body, _ = get(bob.AccessToken, "/_matrix/client/v1/media/download/"+up.ContentURI.Homeserver+"/nosuchmedia")
	if status != http.StatusNotFound || !strings.Contains(string(body), "M_NOT_FOUND") {
		t.Errorf("unknown remote media: %d %s", status, body)
	}
	res, err := insecure.Get(a.fedURL + "/_matrix/federation/v1/media/download/" + up.ContentURI.FileID)
	if err != nil {
		t.Fatal(err)
	}
	_ = res.Body.Close() // only the status matters
	if res.StatusCode != http.StatusUnauthorized {
		t.Errorf("unsigned federation media request: %d", res.StatusCode)
	}

	a.stop()
	if status, body, _ = get(bob.AccessToken, path); status != http.StatusOK || !bytes.Equal(body, content) {
		t.Errorf("cached download after A stopped: %d, %d bytes", status, len(body))
	}
	if status, body, _ = get("", "/_matrix/media/v3/download/"+up.ContentURI.Homeserver+"/"+up.ContentURI.FileID); status != http.StatusOK || !bytes.Equal(body, content) {
		t.Errorf("cached legacy download after A stopped: %d, %d bytes", status, len(body))
	}
}

// fetchesServed is how many federation media downloads the monolith whose metrics
// listener is at addr answered with 200.
func fetchesServed(t *testing.T, addr string) int {
	t.Helper()
	res, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close() // nolint: errcheck // read below
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "dendrite_http_request_duration_seconds_count{") && strings.Contains(line, `route="federation_media_download"`) &&
			strings.Contains(line, `code="200"`) {
			var n int
			if _, err := fmt.Sscanf(line[strings.LastIndexByte(line, ' ')+1:], "%d", &n); err == nil {
				return n
			}
		}
	}
	return 0
}
