// Package internal is the mediaapi's implementation: the content-addressed file store,
// uploads, downloads, thumbnails and the fetching of other servers' media.
package internal

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/matrix-org/dendrite/internal/privfs"
)

// ErrTooLarge is returned by Blobs.Put for content longer than its limit.
var ErrTooLarge = errors.New("content exceeds the size limit")

// ErrNoContent is returned by Blobs.Open for a digest the store does not hold.
var ErrNoContent = errors.New("no content with this digest")

// Blobs is where media bytes live, named by their SHA-256: identical content is stored
// once. It is small on purpose so that an object store can stand in for the filesystem
// (docs/media.md says what one needs).
type Blobs interface {
	// Put stores what r yields, at most limit bytes, and returns its hex SHA-256 and size.
	// Content is complete under its name or absent: a read error, ctx ending or more than
	// limit bytes (ErrTooLarge) leave nothing behind.
	Put(ctx context.Context, r io.Reader, limit int64) (digest string, size int64, err error)
	// Open returns the content named digest; ErrNoContent when absent.
	Open(digest string) (io.ReadSeekCloser, error)
}

// FileStore is Blobs on a local directory: content at <dir>/sha256/<2 hex>/<2 hex>/<hex>,
// files 0600 in directories 0700 (privfs). Put writes a temporary file in <dir>/tmp,
// fsyncs it and renames it into place, so a crash never leaves half a file under a name.
type FileStore struct {
	dir string
}

// NewFileStore creates (privfs.MkdirAll) and opens the store in dir.
func NewFileStore(dir string) (*FileStore, error) {
	for _, d := range []string{dir, filepath.Join(dir, "tmp"), filepath.Join(dir, "sha256")} {
		if err := privfs.MkdirAll(d); err != nil {
			return nil, fmt.Errorf("media store: %w", err)
		}
	}
	return &FileStore{dir: dir}, nil
}

func (s *FileStore) path(digest string) string {
	return filepath.Join(s.dir, "sha256", digest[0:2], digest[2:4], digest)
}

// ctxReader fails reads once ctx has ended.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// Put implements Blobs.
func (s *FileStore) Put(ctx context.Context, r io.Reader, limit int64) (digest string, size int64, err error) {
	tmp, err := os.CreateTemp(filepath.Join(s.dir, "tmp"), "upload-*") // mode 0600
	if err != nil {
		return "", 0, fmt.Errorf("create temporary media file: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()           // the write failed already; that error is reported
			_ = os.Remove(tmp.Name()) // nothing is left behind
		}
	}()
	h := sha256.New()
	size, err = io.Copy(io.MultiWriter(tmp, h), io.LimitReader(ctxReader{ctx, r}, limit+1))
	if err != nil {
		return "", 0, err
	}
	if size > limit {
		return "", 0, ErrTooLarge
	}
	if err = tmp.Sync(); err != nil {
		return "", 0, fmt.Errorf("sync media file: %w", err)
	}
	if err = tmp.Close(); err != nil {
		return "", 0, fmt.Errorf("close media file: %w", err)
	}
	digest = hex.EncodeToString(h.Sum(nil))
	dst := s.path(digest)
	if err = privfs.MkdirAll(filepath.Dir(dst)); err != nil {
		return "", 0, err
	}
	if err = os.Rename(tmp.Name(), dst); err != nil {
		return "", 0, fmt.Errorf("move media file into place: %w", err)
	}
	return digest, size, nil
}

// Open implements Blobs.
func (s *FileStore) Open(digest string) (io.ReadSeekCloser, error) {
	if len(digest) != sha256.Size*2 {
		return nil, ErrNoContent
	}
	if _, err := hex.DecodeString(digest); err != nil {
		return nil, ErrNoContent
	}
	f, err := os.Open(s.path(digest))
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNoContent
	}
	return f, err
}
