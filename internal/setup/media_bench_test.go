package setup

import (
	"bytes"
	"context"
	"image"
	"image/color"
	"image/jpeg"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/test/e2e"
)

// peakRSS is the process's peak resident set (VmHWM) in MB; the monolith runs in it.
func peakRSS(b *testing.B) float64 {
	b.Helper()
	s, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Skip("no /proc/self/status")
	}
	for _, line := range strings.Split(string(s), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseFloat(strings.Fields(rest)[0], 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb / 1024
		}
	}
	return 0
}

// zeros is an io.Reader of n bytes that allocates nothing per read.
type zeros struct{ n int64 }

func (z *zeros) Read(p []byte) (int, error) {
	if z.n <= 0 {
		return 0, io.EOF
	}
	n := min(int64(len(p)), z.n)
	clear(p[:n])
	z.n -= n
	return int(n), nil
}

// mediaMonolith starts a monolith (SQLite) on loopback for a media benchmark and returns its base
// URL and a registered user's access token.
func mediaMonolith(b *testing.B, change func(*config.Dendrite)) (string, string) {
	b.Helper()
	cfg := config.Defaults()
	cfg.Global.ServerName = "bench.test"
	cfg.Global.DataDir = b.TempDir()
	cfg.ClientAPI.RegistrationDisabled, cfg.ClientAPI.RateLimiting.Enabled, cfg.UserAPI.BCryptCost = false, false, 4
	if change != nil {
		change(cfg)
	}
	logger := logrus.New()
	logger.SetLevel(logrus.WarnLevel)
	ctx, cancel := context.WithCancel(context.Background())
	m, err := NewMonolith(ctx, cfg, logger)
	if err != nil {
		b.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx, l) }()
	b.Cleanup(func() { cancel(); <-done })
	base := "http://" + l.Addr().String()
	return base, e2e.Register(b, base, "alice").AccessToken
}

// benchUpload uploads content and returns its "server/mediaId".
func benchUpload(b *testing.B, client *http.Client, base, token, contentType string, body io.Reader, size int64) string {
	b.Helper()
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, base+"/_matrix/media/v3/upload", body) // a fixed valid URL
	req.ContentLength = size
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", contentType)
	res, err := client.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	out, _ := io.ReadAll(res.Body)
	_ = res.Body.Close()
	if res.StatusCode != http.StatusOK {
		b.Fatalf("upload: %d %s", res.StatusCode, out)
	}
	return strings.TrimSuffix(strings.TrimPrefix(string(out), `{"content_uri":"mxc://`), `"}`)
}

// BenchmarkMedia100MB uploads and downloads a 100 MB file through a monolith (SQLite) over
// loopback HTTP and reports MB/s and the process's peak RSS (the test binary holds the
// monolith: streaming end to end keeps it far below the file size).
func BenchmarkMedia100MB(b *testing.B) {
	const size = 100 << 20
	base, token := mediaMonolith(b, func(c *config.Dendrite) { c.MediaAPI.MaxFileSizeBytes = size })
	b.SetBytes(size)
	b.ResetTimer()
	for range b.N {
		uri := benchUpload(b, http.DefaultClient, base, token, "application/octet-stream", &zeros{size}, size)
		dl, _ := http.NewRequest(http.MethodGet, base+"/_matrix/client/v1/media/download/"+uri, nil) // a fixed valid URL
		dl.Header.Set("Authorization", "Bearer "+token)
		res, err := http.DefaultClient.Do(dl)
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, res.Body)
		_ = res.Body.Close()
		if err != nil || n != size {
			b.Fatalf("download: %d bytes, %v", n, err)
		}
	}
	b.StopTimer()
	b.ReportMetric(peakRSS(b), "peakRSS_MB")
}

// cpuSeconds is the CPU time (user and system) the process has used.
func cpuSeconds(b *testing.B) float64 {
	b.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// BenchmarkThumbnails2MP uploads 2-megapixel (1920x1080) JPEGs through a monolith; each
// upload generates the configured thumbnail sizes before it answers, so the figures are
// thumbnails generated per second of wall time and per second of the process's CPU time
// (upload and storage included; the second is what a loaded machine distorts least).
func BenchmarkThumbnails2MP(b *testing.B) {
	base, token := mediaMonolith(b, nil)
	img := image.NewRGBA(image.Rect(0, 0, 1920, 1080))
	for y := range 1080 {
		for x := range 1920 {
			img.Set(x, y, color.RGBA{R: uint8(x * 7), G: uint8(y * 3), B: uint8(x ^ y), A: 255})
		}
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: 85}); err != nil {
		b.Fatal(err)
	}
	sizes := len(config.Defaults().MediaAPI.ThumbnailSizes)
	cpu := cpuSeconds(b)
	b.ResetTimer()
	for range b.N {
		benchUpload(b, http.DefaultClient, base, token, "image/jpeg", bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*sizes)/b.Elapsed().Seconds(), "thumbnails/s")
	b.ReportMetric(float64(b.N*sizes)/(cpuSeconds(b)-cpu), "thumbnails/cpu_s")
}

// BenchmarkDownload1MBx200 downloads one 1 MB file 200 times at once (one connection
// each) per iteration through the authenticated endpoint and reports the p50 and p99
// latency of all downloads.
func BenchmarkDownload1MBx200(b *testing.B) {
	const size, clients = 1 << 20, 200
	base, token := mediaMonolith(b, nil)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients}}
	uri := benchUpload(b, client, base, token, "application/octet-stream", &zeros{size}, size)
	var latencies []time.Duration
	var mu sync.Mutex
	b.SetBytes(size * clients)
	b.ResetTimer()
	for range b.N {
		var wg sync.WaitGroup
		for range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, _ := http.NewRequest(http.MethodGet, base+"/_matrix/client/v1/media/download/"+uri, nil) // a fixed valid URL
				req.Header.Set("Authorization", "Bearer "+token)
				start := time.Now()
				res, err := client.Do(req)
				if err != nil {
					b.Error(err)
					return
				}
				n, err := io.Copy(io.Discard, res.Body)
				_ = res.Body.Close()
				took := time.Since(start)
				if err != nil || n != size {
					b.Errorf("download: %d bytes, %v", n, err)
					return
				}
				mu.Lock()
				latencies = append(latencies, took)
				mu.Unlock()
			}()
		}
		wg.Wait()
	}
	b.StopTimer()
	if len(latencies) == 0 {
		return
	}
	slices.Sort(latencies)
	pct := func(p float64) float64 {
		return float64(latencies[min(len(latencies)-1, int(p*float64(len(latencies))))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), "p50_ms")
	b.ReportMetric(pct(0.99), "p99_ms")
}
