package internal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/draw"
	_ "image/gif" // decodes GIF (its first frame: a still thumbnail)
	"image/jpeg"
	"image/png"
	"io"
	"math"
	"slices"
	"time"

	xdraw "golang.org/x/image/draw"
	_ "golang.org/x/image/webp" // decodes WebP

	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	"github.com/matrix-org/dendrite/mediaapi/storage"
)

// thumbnailable are the content types thumbnails are made of.
var thumbnailable = map[string]bool{"image/jpeg": true, "image/png": true, "image/gif": true, "image/webp": true}

// errCannotThumbnail is the spec's 400 for content that is not a picture we decode.
var errCannotThumbnail = matrixerr.BadRequest("cannot generate thumbnails for the requested content")

// chooseSize is the configured size to serve for a request: the smallest of the requested
// method at least as large as asked, else the largest of it (the spec lets a thumbnail be
// larger than asked). Only configured sizes are generated, so a client cannot fill the
// store with every size.
func chooseSize(sizes []config.ThumbnailSize, width, height int, method string) (config.ThumbnailSize, bool) {
	var best, largest config.ThumbnailSize
	found := false
	for _, s := range sizes {
		if s.Method != method {
			continue
		}
		if s.Width*s.Height > largest.Width*largest.Height {
			largest = s
		}
		if s.Width >= width && s.Height >= height && (!found || s.Width*s.Height < best.Width*best.Height) {
			best, found = s, true
		}
	}
	if found {
		return best, true
	}
	return largest, largest.Width > 0
}

// Thumbnail returns a stored thumbnail of row for the request, generating and caching the
// chosen size on first use: 400 for content that is no picture or does not decode, 413 for
// a picture over max_thumbnail_generation_pixels.
func (m *Media) Thumbnail(ctx context.Context, row *storage.Media, width, height int, method string) (*storage.Thumbnail, error) {
	if !thumbnailable[row.ContentType] {
		return nil, errCannotThumbnail
	}
	size, ok := chooseSize(m.Cfg.ThumbnailSizes, width, height, method)
	if !ok {
		if size, ok = chooseSize(m.Cfg.ThumbnailSizes, width, height, otherMethod(method)); !ok {
			return nil, errCannotThumbnail
		}
	}
	stored, err := m.DB.SelectThumbnails(ctx, row.ServerName, row.MediaID)
	if err != nil {
		return nil, err
	}
	for i := range stored {
		if t := &stored[i]; t.Width == size.Width && t.Height == size.Height && t.Method == size.Method {
			return t, nil
		}
	}
	return m.generate(ctx, row, size)
}

func otherMethod(method string) string {
	if method == "crop" {
		return "scale"
	}
	return "crop"
}

// pregenerate makes the configured thumbnail sizes of a new picture. The picture is
// decoded once; each size is scaled from the smallest "scale" thumbnail made already that
// is large enough for it (largest sizes first), so a large picture is scaled down at full
// size only once.
func (m *Media) pregenerate(ctx context.Context, row *storage.Media) {
	if !thumbnailable[row.ContentType] {
		return
	}
	start := time.Now()
	src, format, err := m.decode(row)
	if err != nil {
		var merr *matrixerr.Error
		if !errors.As(err, &merr) { // not merely a picture too large or undecodable (a request says why)
			m.Logger.WithError(err).WithField("media_id", row.MediaID).Warn("thumbnail generation failed")
		}
		return
	}
	sizes := slices.Clone(m.Cfg.ThumbnailSizes)
	slices.SortStableFunc(sizes, func(a, b config.ThumbnailSize) int { return b.Width*b.Height - a.Width*a.Height })
	sw, sh := src.Bounds().Dx(), src.Bounds().Dy()
	var scaled []image.Image // full-picture thumbnails made, largest first
	for _, size := range sizes {
		from := src
		needW, needH := coverDims(sw, sh, size)
		for _, s := range scaled {
			if s.Bounds().Dx() >= needW && s.Bounds().Dy() >= needH {
				from = s
			}
		}
		out := resize(from, fitSize(size, sw, sh))
		if _, err := m.store(ctx, row, size, out, format, start); err != nil {
			m.Logger.WithError(err).WithField("media_id", row.MediaID).Warn("thumbnail generation failed")
			return
		}
		if size.Method == "scale" {
			scaled = append(scaled, out)
		}
		start = time.Now()
	}
}

// fitSize is size bounded by the original picture's dimensions, so that a size scaled
// from a smaller thumbnail comes out as it would from the picture (pictures are never
// enlarged).
func fitSize(size config.ThumbnailSize, sw, sh int) config.ThumbnailSize {
	if size.Method == "crop" {
		size.Width, size.Height = min(size.Width, sw), min(size.Height, sh)
	}
	return size
}

// coverDims are the smallest dimensions (of the picture's aspect) a picture of sw x sh
// may be scaled down to and still give size's thumbnail without enlarging.
func coverDims(sw, sh int, size config.ThumbnailSize) (int, int) {
	tw, th := min(size.Width, sw), min(size.Height, sh)
	f := min(float64(tw)/float64(sw), float64(th)/float64(sh)) // scale: fit inside
	if size.Method == "crop" {
		f = max(float64(tw)/float64(sw), float64(th)/float64(sh)) // crop: cover
	}
	return int(math.Ceil(f * float64(sw))), int(math.Ceil(f * float64(sh)))
}

// decode reads a stored picture. Its dimensions are read from its header first, so a
// picture of huge dimensions in a tiny file (a decompression bomb) is refused before any
// pixel is allocated.
func (m *Media) decode(row *storage.Media) (image.Image, string, error) {
	f, err := m.Open(row.SHA256)
	if err != nil {
		return nil, "", err
	}
	defer f.Close() // nolint: errcheck // read-only
	cfg, format, err := image.DecodeConfig(f)
	if err != nil {
		return nil, "", errCannotThumbnail
	}
	if int64(cfg.Width)*int64(cfg.Height) > m.Cfg.MaxThumbnailGenerationPixels {
		return nil, "", matrixerr.TooLarge("the picture is too large to thumbnail")
	}
	if _, err = f.Seek(0, io.SeekStart); err != nil {
		return nil, "", fmt.Errorf("rewind media: %w", err)
	}
	src, _, err := image.Decode(f)
	if err != nil {
		return nil, "", errCannotThumbnail
	}
	return src, format, nil
}

// generate makes, stores and records one thumbnail.
func (m *Media) generate(ctx context.Context, row *storage.Media, size config.ThumbnailSize) (*storage.Thumbnail, error) {
	start := time.Now()
	src, format, err := m.decode(row)
	if err != nil {
		return nil, err
	}
	return m.store(ctx, row, size, resize(src, size), format, start)
}

// store encodes a thumbnail (JPEG stays JPEG, the rest become PNG), stores and records it.
func (m *Media) store(ctx context.Context, row *storage.Media, size config.ThumbnailSize, out image.Image, format string,
	start time.Time) (*storage.Thumbnail, error) {
	var buf bytes.Buffer
	var err error
	contentType := "image/png"
	if format == "jpeg" {
		contentType = "image/jpeg"
		err = jpeg.Encode(&buf, out, &jpeg.Options{Quality: 80})
	} else {
		err = (&png.Encoder{CompressionLevel: png.BestSpeed}).Encode(&buf, out)
	}
	if err != nil {
		return nil, fmt.Errorf("encode thumbnail: %w", err)
	}
	digest, n, err := m.Blobs.Put(ctx, &buf, int64(buf.Len()))
	if err != nil {
		return nil, fmt.Errorf("store thumbnail: %w", err)
	}
	t := &storage.Thumbnail{ServerName: row.ServerName, MediaID: row.MediaID, Width: size.Width, Height: size.Height, Method: size.Method,
		ContentType: contentType, Size: n, SHA256: digest}
	if err = m.DB.InsertThumbnail(ctx, t); err != nil {
		return nil, err
	}
	m.Metrics.thumbnail(time.Since(start))
	return t, nil
}

// resize scales src for size: "scale" fits it inside width x height keeping its aspect;
// "crop" scales it to cover width x height and cuts the overflow off around the centre.
// Neither enlarges a picture smaller than the size.
func resize(src image.Image, size config.ThumbnailSize) image.Image {
	b := src.Bounds()
	sw, sh := b.Dx(), b.Dy()
	if sw < 1 || sh < 1 {
		return src
	}
	if size.Method == "crop" {
		tw, th := min(size.Width, sw), min(size.Height, sh)
		// The source rectangle with the target's aspect, as large as fits, centred.
		cw, ch := sw, sw*th/tw
		if ch > sh {
			cw, ch = sh*tw/th, sh
		}
		x0, y0 := b.Min.X+(sw-cw)/2, b.Min.Y+(sh-ch)/2
		dst := image.NewRGBA(image.Rect(0, 0, tw, th))
		xdraw.BiLinear.Scale(dst, dst.Bounds(), src, image.Rect(x0, y0, x0+cw, y0+ch), draw.Src, nil)
		return dst
	}
	tw, th := sw, sh
	if tw > size.Width {
		tw, th = size.Width, max(1, sh*size.Width/sw)
	}
	if th > size.Height {
		tw, th = max(1, sw*size.Height/sh), size.Height
	}
	if tw == sw && th == sh {
		return src
	}
	dst := image.NewRGBA(image.Rect(0, 0, tw, th))
	xdraw.BiLinear.Scale(dst, dst.Bounds(), src, b, draw.Src, nil)
	return dst
}
