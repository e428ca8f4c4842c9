package e2e

import (
	"bytes"
	"context"
	"image"
	"image/color"
	"image/png"
	"io"
	"net/http"
	"testing"

	"maunium.net/go/mautrix"

	"github.com/matrix-org/dendrite/internal/config"
)

// PNG is a w x h PNG with a gradient (so that scaling has something to do).
func PNG(t testing.TB, w, h int) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, color.RGBA{R: uint8(x), G: uint8(y), B: uint8(x + y), A: 255})
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// Media is the media story against the server at base: a user uploads a picture with
// mautrix and makes it their avatar; another user finds it in the profile, downloads it
// byte-identical through the authenticated endpoint and gets a thumbnail of every one of
// sizes (the server's configured sizes); without a token the download is 401.
func Media(t *testing.T, base string, sizes []config.ThumbnailSize) {
	ctx := context.Background()
	t.Helper()
	alice, bob := Register(t, base, "alice"), Register(t, base, "bob")
	picture := PNG(t, 1000, 700)
	up, err := alice.UploadBytesWithName(ctx, picture, "image/png", "me.png")
	if err != nil {
		t.Fatal(err)
	}
	if err = alice.SetAvatarURL(ctx, up.ContentURI); err != nil {
		t.Fatal(err)
	}
	avatar, err := bob.GetAvatarURL(ctx, alice.UserID)
	if err != nil || avatar != up.ContentURI {
		t.Fatalf("avatar %v %v, want %v", avatar, err, up.ContentURI)
	}
	got, err := bob.DownloadBytes(ctx, avatar)
	if err != nil || !bytes.Equal(got, picture) {
		t.Fatalf("download: %d bytes, %v", len(got), err)
	}
	for _, s := range sizes {
		res, err := bob.DownloadThumbnail(ctx, avatar, s.Height, s.Width, mautrix.DownloadThumbnailExtra{Method: s.Method})
		if err != nil {
			t.Fatalf("thumbnail %+v: %v", s, err)
		}
		b, err := io.ReadAll(res.Body)
		_ = res.Body.Close() // read
		if err != nil {
			t.Fatal(err)
		}
		img, format, err := image.DecodeConfig(bytes.NewReader(b))
		if err != nil || format != "png" || res.Header.Get("Content-Type") != "image/png" {
			t.Fatalf("thumbnail %+v: %s %v %q", s, format, err, res.Header.Get("Content-Type"))
		}
		switch {
		case s.Method == "crop" && (img.Width != s.Width || img.Height != s.Height):
			t.Errorf("crop %+v: got %dx%d", s, img.Width, img.Height)
		case s.Method == "scale" && (img.Width > s.Width || img.Height > s.Height || (img.Width != s.Width && img.Height != s.Height)):
			t.Errorf("scale %+v: got %dx%d", s, img.Width, img.Height)
		}
	}
	res, err := http.Get(base + "/_matrix/client/v1/media/download/" + avatar.Homeserver + "/" + avatar.FileID)
	if err != nil {
		t.Fatal(err)
	}
	_ = res.Body.Close() // only the status matters
	if res.StatusCode != http.StatusUnauthorized {
		t.Errorf("download without a token: %d", res.StatusCode)
	}
}
