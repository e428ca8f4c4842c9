// Package privfs creates the files that hold the server's secrets and history (SQLite
// databases, the signing key, the generated config; media files later) readable by their
// owner only: files 0600 in directories created 0700. The modes are given at creation,
// never left to the process umask, which can only take bits away.
//
// It also refuses directories that other users may write to: whoever can write to the
// directory holding a database can replace it (or its -wal file) under the server.
package privfs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// FileMode and DirMode are the modes of what this package creates.
const (
	FileMode fs.FileMode = 0o600
	DirMode  fs.FileMode = 0o700
)

// MkdirAll creates dir and its missing parents with DirMode. It refuses, with an error
// naming the directory and the chmod that fixes it, when dir is group- or world-writable,
// or when the existing directory it creates the first missing one in is (unless that one
// has the sticky bit, as /tmp does: nobody else may then rename or remove what we create
// there).
func MkdirAll(dir string) error {
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs // messages name the directory unambiguously
	}
	parent, err := existingAncestor(dir)
	if err != nil {
		return err
	}
	if parent != dir {
		if err = checkDir(parent, true); err != nil {
			return err
		}
		if err = os.MkdirAll(dir, DirMode); err != nil {
			return fmt.Errorf("create directory %s: %w", dir, err)
		}
	}
	return checkDir(dir, false)
}

// existingAncestor is dir when it exists, else its closest existing ancestor.
func existingAncestor(dir string) (string, error) {
	for p := dir; ; p = filepath.Dir(p) {
		_, err := os.Stat(p)
		if err == nil {
			return p, nil
		}
		if !errors.Is(err, fs.ErrNotExist) || filepath.Dir(p) == p {
			return "", fmt.Errorf("directory %s: %w", dir, err)
		}
	}
}

// checkDir refuses a directory that is group- or world-writable; stickyOK accepts one with
// the sticky bit.
func checkDir(dir string, stickyOK bool) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("directory %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	mode := fi.Mode()
	if mode.Perm()&0o022 == 0 || (stickyOK && mode&fs.ModeSticky != 0) {
		return nil
	}
	return fmt.Errorf("directory %s is group- or world-writable (mode %04o), so other users could replace the server's "+
		"databases and keys; run `chmod go-w %s` (or `chmod 700 %s`) and start again", dir, mode.Perm(), dir, dir)
}

// PrepareFile makes sure path exists with FileMode before a library (SQLite) opens it: it
// creates its directory (MkdirAll), creates an empty file 0600 if there is none, and takes
// group and other permissions away from an existing one (a database from before this
// check).
func PrepareFile(path string) error {
	if err := MkdirAll(filepath.Dir(path)); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, FileMode)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	return Restrict(path)
}

// Restrict takes group and other permissions away from each path that exists.
func Restrict(paths ...string) error {
	for _, p := range paths {
		fi, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o077 != 0 {
			if err = os.Chmod(p, fi.Mode().Perm()&FileMode); err != nil {
				return fmt.Errorf("restrict %s to its owner: %w", p, err)
			}
		}
	}
	return nil
}

// WriteFile writes data to path, a new file, with FileMode, creating its directory with
// MkdirAll. An existing file is refused, so a secret is never written into a file someone
// else prepared.
func WriteFile(path string, data []byte) error {
	if err := MkdirAll(filepath.Dir(path)); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, FileMode)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	if _, err = f.Write(data); err != nil {
		_ = f.Close() // the write error is the one to report
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
