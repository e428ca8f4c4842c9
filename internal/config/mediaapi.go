package config

import (
	"fmt"
	"path/filepath"
	"time"
)

// MediaAPI configures the media repository: uploads, downloads, thumbnails and other
// servers' media fetched over federation.
type MediaAPI struct {
	Database DatabaseOptions `yaml:"database"`
	// Listen is where the polylith's mediaapi process serves /_matrix/media,
	// /_matrix/client/v1/media and /_matrix/federation/v1/media.
	Listen      string      `yaml:"listen"`
	InternalAPI InternalAPI `yaml:"internal_api"`
	// BasePath is the directory of the content-addressed file store (default
	// <data_dir>/media). Files are created 0600 in directories created 0700.
	BasePath string `yaml:"base_path"`
	// MaxFileSizeBytes bounds an upload (413 M_TOO_LARGE beyond) and a remote file fetched.
	MaxFileSizeBytes int64 `yaml:"max_file_size_bytes"`
	// MaxThumbnailGenerationPixels: a picture with more pixels (width times height, read
	// from its header before anything is decoded) gets no thumbnail.
	MaxThumbnailGenerationPixels int64 `yaml:"max_thumbnail_generation_pixels"`
	// ThumbnailSizes are generated for every uploaded picture; a request for another size
	// gets the smallest of these at least as large, else the largest.
	ThumbnailSizes []ThumbnailSize `yaml:"thumbnail_sizes"`
	// FreezeLegacyMedia is the spec's freeze of the unauthenticated (deprecated)
	// /_matrix/media/v3/download and thumbnail endpoints: media stored while it is on
	// (uploaded here or fetched from another server) is served only through the
	// authenticated /_matrix/client/v1/media endpoints; media stored before stays available
	// on both.
	FreezeLegacyMedia bool `yaml:"freeze_legacy_media"`
	// UnusedExpiry is how long a media ID reserved with POST /_matrix/media/v1/create may
	// wait for its upload.
	UnusedExpiry Duration `yaml:"unused_expiry"`
	// MaxPendingUploads bounds the reserved, not yet uploaded, media IDs of one user (429
	// M_LIMIT_EXCEEDED beyond).
	MaxPendingUploads int `yaml:"max_pending_uploads"`
	// URLPreview is GET /_matrix/client/v1/media/preview_url (and the legacy one).
	URLPreview URLPreview `yaml:"url_preview"`
}

// URLPreview configures URL previews: off by default, since the server then fetches any
// URL its users name. Its fetches go through the global.deny_networks dialer, which checks
// the resolved address of the URL and of every redirect.
type URLPreview struct {
	// Enabled serves previews; when off the endpoints answer 404 M_UNRECOGNIZED.
	Enabled bool `yaml:"enabled"`
	// MaxPageBytes is how much of an HTML page is read for its title and OpenGraph tags;
	// the rest is never downloaded. A page's og:image is bounded by max_file_size_bytes.
	MaxPageBytes int64 `yaml:"max_page_bytes"`
	// Timeout bounds one preview: the page, its redirects and its image.
	Timeout Duration `yaml:"timeout"`
}

// ThumbnailSize is a thumbnail size: method "crop" fills exactly width x height, cutting
// off what overflows; "scale" fits the picture inside width x height, keeping its aspect.
type ThumbnailSize struct {
	Width  int    `yaml:"width"`
	Height int    `yaml:"height"`
	Method string `yaml:"method"`
}

func defaultMediaAPI() MediaAPI {
	return MediaAPI{
		Listen: ":8074", InternalAPI: InternalAPI{Listen: ":7779", Connect: "http://mediaapi:7779"},
		MaxFileSizeBytes: 100 << 20, MaxThumbnailGenerationPixels: 32_000_000,
		ThumbnailSizes: []ThumbnailSize{
			{Width: 32, Height: 32, Method: "crop"}, {Width: 96, Height: 96, Method: "crop"},
			{Width: 320, Height: 240, Method: "scale"}, {Width: 640, Height: 480, Method: "scale"},
			{Width: 800, Height: 600, Method: "scale"},
		},
		UnusedExpiry: Duration(24 * time.Hour), MaxPendingUploads: 10,
		URLPreview: URLPreview{MaxPageBytes: 1 << 20, Timeout: Duration(10 * time.Second)},
	}
}

// MediaPath is the file store's directory: media_api.base_path, else media in the data
// directory.
func (c *Dendrite) MediaPath() string {
	if c.MediaAPI.BasePath != "" {
		return c.MediaAPI.BasePath
	}
	return filepath.Join(c.Global.DataDir, "media")
}

func (m *MediaAPI) verify(bad func(path, problem string)) {
	if m.MaxFileSizeBytes < 1024 {
		bad("media_api.max_file_size_bytes", "must be at least 1024")
	}
	if m.MaxThumbnailGenerationPixels < 1 {
		bad("media_api.max_thumbnail_generation_pixels", "must be positive")
	}
	for i, s := range m.ThumbnailSizes {
		path := fmt.Sprintf("media_api.thumbnail_sizes[%d]", i)
		if s.Width < 1 || s.Height < 1 || s.Width > 2000 || s.Height > 2000 {
			bad(path, "width and height must be between 1 and 2000")
		}
		if s.Method != "crop" && s.Method != "scale" {
			bad(path+".method", "must be crop or scale")
		}
	}
	if m.UnusedExpiry <= 0 {
		bad("media_api.unused_expiry", "must be positive")
	}
	if m.MaxPendingUploads < 1 {
		bad("media_api.max_pending_uploads", "must be at least 1")
	}
	if m.URLPreview.MaxPageBytes < 1024 {
		bad("media_api.url_preview.max_page_bytes", "must be at least 1024")
	}
	if m.URLPreview.Timeout <= 0 {
		bad("media_api.url_preview.timeout", "must be positive")
	}
}
