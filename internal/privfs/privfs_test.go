package privfs

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// zeroUmask clears the process umask for the test, so that modes can only come from the
// code under test.
func zeroUmask(t *testing.T) {
	old := syscall.Umask(0)
	t.Cleanup(func() { syscall.Umask(old) })
}

func mode(t *testing.T, path string) fs.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestPrepareFile(t *testing.T) {
	root := t.TempDir() // made before the umask changes: the testing package makes it 0777 &^ umask
	zeroUmask(t)
	db := filepath.Join(root, "a", "b", "x.db")
	if err := PrepareFile(db); err != nil {
		t.Fatal(err)
	}
	if m := mode(t, db); m != 0o600 {
		t.Fatalf("new file mode %04o", m)
	}
	for _, d := range []string{filepath.Join(root, "a"), filepath.Join(root, "a", "b")} {
		if m := mode(t, d); m != 0o700 {
			t.Fatalf("new directory %s mode %04o", d, m)
		}
	}
	old := filepath.Join(root, "old.db")
	if err := os.WriteFile(old, []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := PrepareFile(old); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(old); mode(t, old) != 0o600 || string(b) != "data" {
		t.Fatalf("existing file: mode %04o, content %q", mode(t, old), b)
	}
}

func TestMkdirAllRefusesWritableDirectories(t *testing.T) {
	root := t.TempDir() // made before the umask changes: the testing package makes it 0777 &^ umask
	zeroUmask(t)
	open := filepath.Join(root, "open")
	if err := os.Mkdir(open, 0o777); err != nil {
		t.Fatal(err)
	}
	groupOnly := filepath.Join(root, "group")
	if err := os.Mkdir(groupOnly, 0o770); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{open, groupOnly, filepath.Join(open, "data")} {
		err := MkdirAll(dir)
		refused := open
		if dir == groupOnly {
			refused = groupOnly
		}
		if err == nil || !strings.Contains(err.Error(), refused) || !strings.Contains(err.Error(), "chmod go-w "+refused) {
			t.Fatalf("MkdirAll(%s): %v, want a refusal naming %s and the chmod", dir, err, refused)
		}
	}
	if _, err := os.Stat(filepath.Join(open, "data")); err == nil {
		t.Fatal("a directory was created in a world-writable parent")
	}
	// A sticky world-writable parent (like /tmp) may be created into.
	sticky := filepath.Join(root, "sticky")
	if err := os.Mkdir(sticky, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(sticky, 0o777|fs.ModeSticky); err != nil {
		t.Fatal(err)
	}
	if err := MkdirAll(filepath.Join(sticky, "data")); err != nil {
		t.Fatalf("in a sticky parent: %v", err)
	}
	if m := mode(t, filepath.Join(sticky, "data")); m != 0o700 {
		t.Fatalf("created mode %04o", m)
	}
	if err := MkdirAll(sticky); err == nil {
		t.Fatal("a world-writable directory itself was accepted because it is sticky")
	}
}

func TestWriteFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys", "key.pem")
	zeroUmask(t)
	if err := WriteFile(path, []byte("secret")); err != nil {
		t.Fatal(err)
	}
	if mode(t, path) != 0o600 || mode(t, filepath.Dir(path)) != 0o700 {
		t.Fatalf("modes %04o %04o", mode(t, path), mode(t, filepath.Dir(path)))
	}
	if err := WriteFile(path, []byte("other")); err == nil {
		t.Fatal("an existing file was overwritten")
	}
}
