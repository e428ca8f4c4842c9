package setup

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/internal/config"
)

// TestMonolithDataDir: a missing data directory is created 0700 with the signing key and
// the databases 0600 in it; a group- or world-writable one stops the start with a message
// naming it and the chmod that fixes it.
func TestMonolithDataDir(t *testing.T) {
	logger := logrus.New()
	logger.SetOutput(io.Discard)
	cfg := config.Defaults()
	cfg.Global.DataDir = filepath.Join(t.TempDir(), "data")
	m, err := NewMonolith(context.Background(), cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	if err = m.env.log.Close(); err != nil {
		t.Fatal(err)
	}
	defer m.env.closeDBs() // after the modes are read: -wal and -shm exist while open
	entries, err := os.ReadDir(cfg.Global.DataDir)
	if err != nil || len(entries) == 0 {
		t.Fatalf("data directory: %v %v", entries, err)
	}
	if fi, _ := os.Stat(cfg.Global.DataDir); fi.Mode().Perm() != 0o700 {
		t.Fatalf("data directory mode %04o", fi.Mode().Perm())
	}
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		want := os.FileMode(0o600)
		if e.IsDir() {
			want = 0o700 // the media store
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %04o, want %04o", e.Name(), fi.Mode().Perm(), want)
		}
	}

	for _, perm := range []os.FileMode{0o777, 0o775} {
		dir := filepath.Join(t.TempDir(), "shared")
		if err = os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err = os.Chmod(dir, perm); err != nil {
			t.Fatal(err)
		}
		cfg := config.Defaults()
		cfg.Global.DataDir = dir
		_, err = NewMonolith(context.Background(), cfg, logger)
		if err == nil || !strings.Contains(err.Error(), "global.data_dir") || !strings.Contains(err.Error(), "chmod go-w "+dir) {
			t.Fatalf("data directory mode %04o: %v", perm, err)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Fatalf("data directory mode %04o: files were created before the refusal: %v", perm, entries)
		}
	}
}
