package setup

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"

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

// BenchmarkMedia100MB uploads and downloads a 100 MB file through a monolith (SQLite) over
// loopback HTTP and reports MB/s and the process's peak RSS (the test binary holds the
// monolith: streaming end to end keeps it far below the file size).
func BenchmarkMedia100MB(b *testing.B) {
	const size = 100 << 20
	cfg := config.Defaults()
	cfg.Global.ServerName = "bench.test"
	cfg.Global.DataDir = b.TempDir()
	cfg.ClientAPI.RegistrationDisabled, cfg.ClientAPI.RateLimiting.Enabled, cfg.UserAPI.BCryptCost = false, false, 4
	cfg.MediaAPI.MaxFileSizeBytes = size
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
	alice := e2e.Register(b, base, "alice")
	b.SetBytes(size)
	b.ResetTimer()
	for range b.N {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, base+"/_matrix/media/v3/upload", &zeros{size}) // a fixed valid URL
		req.ContentLength = size
		req.Header.Set("Authorization", "Bearer "+alice.AccessToken)
		req.Header.Set("Content-Type", "application/octet-stream")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		_ = res.Body.Close()
		if res.StatusCode != http.StatusOK {
			b.Fatalf("upload: %d %s", res.StatusCode, body)
		}
		uri := strings.TrimSuffix(strings.TrimPrefix(string(body), `{"content_uri":"mxc://`), `"}`)
		dl, _ := http.NewRequest(http.MethodGet, base+"/_matrix/client/v1/media/download/"+uri, nil) // a fixed valid URL
		dl.Header.Set("Authorization", "Bearer "+alice.AccessToken)
		res, err = http.DefaultClient.Do(dl)
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
