package mediaapi_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"net/http"
	"strings"
	"testing"

	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
)

func picture(w, h int) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, color.RGBA{R: uint8(x), G: uint8(y), B: 90, A: 255})
		}
	}
	return img
}

func encode(t *testing.T, format string, img image.Image) []byte {
	t.Helper()
	var buf bytes.Buffer
	var err error
	switch format {
	case "png":
		err = png.Encode(&buf, img)
	case "jpeg":
		err = jpeg.Encode(&buf, img, nil)
	case "gif":
		err = gif.EncodeAll(&buf, &gif.GIF{Image: []*image.Paletted{paletted(img), paletted(img)}, Delay: []int{10, 10}})
	}
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func paletted(img image.Image) *image.Paletted {
	p := image.NewPaletted(img.Bounds(), []color.Color{color.Black, color.White})
	for y := img.Bounds().Min.Y; y < img.Bounds().Max.Y; y++ {
		for x := img.Bounds().Min.X; x < img.Bounds().Max.X; x++ {
			p.Set(x, y, img.At(x, y))
		}
	}
	return p
}

// bombPNG is a valid PNG header claiming width x height pixels, in a file of a few dozen
// bytes: decoding it would allocate gigabytes.
func bombPNG(t *testing.T, width, height uint32) []byte {
	t.Helper()
	b := encode(t, "png", picture(1, 1))
	ihdr := b[8+8 : 8+8+13] // signature, IHDR length and type, then its data
	binary.BigEndian.PutUint32(ihdr[0:4], width)
	binary.BigEndian.PutUint32(ihdr[4:8], height)
	binary.BigEndian.PutUint32(b[8+8+13:], crc32.ChecksumIEEE(b[8+4:8+8+13]))
	return b
}

// TestThumbnails: JPEG, PNG and GIF uploads get thumbnails of the configured sizes (JPEG
// stays JPEG, the others become PNG; GIF gives a still); a request for another size gets
// the nearest configured one at least as large; a non-image is 400; a picture over
// max_thumbnail_generation_pixels (a decompression bomb among them) is 413 without its
// pixels being allocated; a thumbnail is generated once and then served from its row.
func TestThumbnails(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := newHarness(t, db, func(c *config.MediaAPI) {
			c.MaxThumbnailGenerationPixels = 1_000_000
			c.ThumbnailSizes = []config.ThumbnailSize{{Width: 32, Height: 32, Method: "crop"}, {Width: 96, Height: 96, Method: "crop"},
				{Width: 320, Height: 240, Method: "scale"}}
		})
		for _, c := range []struct {
			format, wantType string
		}{{"png", "image/png"}, {"jpeg", "image/jpeg"}, {"gif", "image/png"}} {
			ref := h.upload("alice", "image/"+c.format, "", encode(t, c.format, picture(400, 200)))
			for _, q := range []struct {
				query string
				w, h  int
			}{
				{"width=32&height=32&method=crop", 32, 32},
				{"width=50&height=40&method=crop", 96, 96},
				{"width=320&height=240&method=scale", 320, 160},
				{"width=10&height=10", 320, 160},
				{"width=5000&height=5000&method=crop", 96, 96},
			} {
				res, b := h.do(http.MethodGet, "/_matrix/client/v1/media/thumbnail/"+ref+"?"+q.query, "bob", "", nil)
				if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != c.wantType {
					t.Fatalf("%s %s: %d %s %s", c.format, q.query, res.StatusCode, res.Header.Get("Content-Type"), b)
				}
				cfg, _, err := image.DecodeConfig(bytes.NewReader(b))
				if err != nil || cfg.Width != q.w || cfg.Height != q.h {
					t.Errorf("%s %s: %dx%d %v, want %dx%d", c.format, q.query, cfg.Width, cfg.Height, err, q.w, q.h)
				}
			}
		}
		var rows int
		if err := db.QueryRow("SELECT COUNT(*) FROM mediaapi_thumbnails").Scan(&rows); err != nil || rows != 9 {
			t.Errorf("thumbnail rows %d %v, want 3 sizes of 3 pictures", rows, err)
		}

		text := h.upload("alice", "text/plain", "", []byte("not a picture"))
		res, b := h.do(http.MethodGet, "/_matrix/client/v1/media/thumbnail/"+text+"?width=32&height=32", "bob", "", nil)
		wantError(t, "thumbnail of text", res, b, http.StatusBadRequest, "M_UNKNOWN")
		broken := h.upload("alice", "image/png", "", []byte("\x89PNG\r\n\x1a\n garbage"))
		res, b = h.do(http.MethodGet, "/_matrix/client/v1/media/thumbnail/"+broken+"?width=32&height=32", "bob", "", nil)
		wantError(t, "thumbnail of a broken picture", res, b, http.StatusBadRequest, "M_UNKNOWN")
		bomb := h.upload("alice", "image/png", "", bombPNG(t, 100_000, 100_000))
		res, b = h.do(http.MethodGet, "/_matrix/client/v1/media/thumbnail/"+bomb+"?width=32&height=32", "bob", "", nil)
		wantError(t, "thumbnail of a decompression bomb", res, b, http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
		big := h.upload("alice", "image/png", "", encode(t, "png", picture(1001, 1000)))
		res, b = h.do(http.MethodGet, "/_matrix/client/v1/media/thumbnail/"+big+"?width=32&height=32", "bob", "", nil)
		wantError(t, "thumbnail over max_thumbnail_generation_pixels", res, b, http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
		res, _ = h.do(http.MethodGet, "/_matrix/client/v1/media/download/"+bomb, "bob", "", nil)
		if res.StatusCode != http.StatusOK {
			t.Errorf("download of the bomb itself: %d", res.StatusCode)
		}
	})
}

// TestAsyncUpload: POST /create reserves a media ID; a download waits for its content (or
// answers 504 M_NOT_YET_UPLOADED when timeout_ms passes); PUT /upload fills it in once,
// only for the user who reserved it; a user has at most max_pending_uploads reservations.
func TestAsyncUpload(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := newHarness(t, db, func(c *config.MediaAPI) { c.MaxPendingUploads = 2 })
		create := func(token string) (*http.Response, string) {
			t.Helper()
			res, b := h.do(http.MethodPost, "/_matrix/media/v1/create", token, "", nil)
			var out struct {
				ContentURI      string `json:"content_uri"`
				UnusedExpiresAt int64  `json:"unused_expires_at"`
			}
			if res.StatusCode == http.StatusOK && (json.Unmarshal(b, &out) != nil || out.UnusedExpiresAt == 0) {
				t.Fatalf("create: %s", b)
			}
			return res, strings.TrimPrefix(out.ContentURI, "mxc://")
		}
		_, ref := create("alice")
		res, b := h.do(http.MethodGet, "/_matrix/client/v1/media/download/"+ref+"?timeout_ms=100", "bob", "", nil)
		wantError(t, "download before the upload", res, b, http.StatusGatewayTimeout, "M_NOT_YET_UPLOADED")
		res, b = h.do(http.MethodPut, "/_matrix/media/v3/upload/"+ref, "bob", "text/plain", []byte("bob's"))
		wantError(t, "upload into another user's media ID", res, b, http.StatusForbidden, "M_FORBIDDEN")
		res, b = h.do(http.MethodPut, "/_matrix/media/v3/upload/other.test/abc", "alice", "text/plain", []byte("x"))
		wantError(t, "upload into another server's media", res, b, http.StatusForbidden, "M_FORBIDDEN")
		res, b = h.do(http.MethodPut, "/_matrix/media/v3/upload/"+ref+"?filename=a.txt", "alice", "text/plain", []byte("alice's"))
		if res.StatusCode != http.StatusOK {
			t.Fatalf("upload: %d %s", res.StatusCode, b)
		}
		res, b = h.do(http.MethodPut, "/_matrix/media/v3/upload/"+ref, "alice", "text/plain", []byte("again"))
		wantError(t, "second upload", res, b, http.StatusConflict, "M_CANNOT_OVERWRITE_MEDIA")
		res, b = h.do(http.MethodGet, "/_matrix/client/v1/media/download/"+ref, "bob", "", nil)
		if res.StatusCode != http.StatusOK || string(b) != "alice's" || res.Header.Get("Content-Disposition") != "inline; filename=a.txt" {
			t.Errorf("download: %d %q %q", res.StatusCode, b, res.Header.Get("Content-Disposition"))
		}
		create("alice")
		create("alice")
		res, _ = create("alice")
		if res.StatusCode != http.StatusTooManyRequests {
			t.Errorf("third pending reservation: %d, want 429", res.StatusCode)
		}
	})
}

// TestPregeneratedSizes: the default sizes made on upload (each scaled from the smallest
// larger thumbnail already made, the picture decoded once) have the dimensions the
// picture itself gives them, for landscape, portrait and tiny pictures.
func TestPregeneratedSizes(t *testing.T) {
	type size struct {
		w, h   int
		method string
	}
	sizes := []size{{32, 32, "crop"}, {96, 96, "crop"}, {320, 240, "scale"}, {640, 480, "scale"}, {800, 600, "scale"}}
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := newHarness(t, db, nil)
		for _, c := range []struct {
			w, h int
			want [][2]int // of sizes
		}{
			{1920, 1080, [][2]int{{32, 32}, {96, 96}, {320, 180}, {640, 360}, {800, 450}}},
			{1000, 1500, [][2]int{{32, 32}, {96, 96}, {160, 240}, {320, 480}, {400, 600}}},
			{60, 50, [][2]int{{32, 32}, {60, 50}, {60, 50}, {60, 50}, {60, 50}}},
		} {
			ref := h.upload("alice", "image/jpeg", "", encode(t, "jpeg", picture(c.w, c.h)))
			for i, s := range sizes {
				res, b := h.do(http.MethodGet, fmt.Sprintf("/_matrix/client/v1/media/thumbnail/%s?width=%d&height=%d&method=%s", ref, s.w, s.h, s.method), "bob", "", nil)
				cfg, _, err := image.DecodeConfig(bytes.NewReader(b))
				if want := c.want[i]; res.StatusCode != http.StatusOK || err != nil || cfg.Width != want[0] || cfg.Height != want[1] {
					t.Errorf("%dx%d, %v: %d %dx%d %v, want %dx%d", c.w, c.h, s, res.StatusCode, cfg.Width, cfg.Height, err, want[0], want[1])
				}
			}
			var rows int
			if err := db.QueryRow("SELECT COUNT(*) FROM mediaapi_thumbnails WHERE media_id = $1", strings.SplitN(ref, "/", 2)[1]).Scan(&rows); err != nil || rows != len(sizes) {
				t.Errorf("%dx%d: %d thumbnail rows %v, want the %d sizes made on upload", c.w, c.h, rows, err, len(sizes))
			}
		}
	})
}
