// Package mediaapi is the media repository (DESIGN.md 2, 13): uploads, downloads and
// thumbnails for clients, our media for other servers, and other servers' media fetched
// over federation and cached. Metadata lives in its SQL tables (storage/), the bytes in a
// content-addressed file store named by their SHA-256 (internal/files.go).
package mediaapi

import (
	"context"
	"crypto/tls"
	"net/http"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/internal/caching"
	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/httputil"
	"github.com/matrix-org/dendrite/internal/outbound"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/mediaapi/internal"
	"github.com/matrix-org/dendrite/mediaapi/routing"
	"github.com/matrix-org/dendrite/mediaapi/storage/sql"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// FederationClient is what the mediaapi needs of the federation client to fetch other
// servers' media (internal/fedclient.Client has it).
type FederationClient = internal.FederationClient

// Deps is what the mediaapi is built from.
type Deps struct {
	Cfg        *config.MediaAPI
	ServerName spec.ServerName
	DB         *sqlutil.DB
	// BasePath is the file store's directory (config.Dendrite.MediaPath).
	BasePath string
	// DeviceLookup resolves access tokens.
	DeviceLookup func(ctx context.Context, token string) (*uapi.Device, error)
	// Verifier checks federation requests' X-Matrix signatures (the key ring).
	Verifier gomatrixserverlib.JSONVerifier
	// Federation fetches other servers' media; nil serves our own media only.
	Federation FederationClient
	// Deny are the networks a fetch redirected by another server, and a URL preview's
	// page, redirects and image, must not reach (global.deny_networks).
	Deny *outbound.Policy
	// PreviewTLS is the TLS configuration of URL preview fetches (nil: the system's roots).
	PreviewTLS *tls.Config
	// CacheBudget is the process's cache budget; URL previews take a share of it.
	CacheBudget caching.Budget
	// RequestTimeout bounds one fetch of another server's media.
	RequestTimeout time.Duration
	Logger         *logrus.Entry
	Registerer     prometheus.Registerer
}

// previewCacheShare is the share of the process's cache budget URL previews take.
const previewCacheShare = 0.03125

// MediaAPI is a built media repository.
type MediaAPI struct {
	routing *routing.Routing
}

// New opens the storage and the file store.
func New(ctx context.Context, d Deps) (*MediaAPI, error) {
	db, err := sql.Open(ctx, d.DB)
	if err != nil {
		return nil, err
	}
	blobs, err := internal.NewFileStore(d.BasePath)
	if err != nil {
		return nil, err
	}
	metrics := internal.NewMetrics(d.Registerer, func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		n, err := db.TotalBytes(ctx)
		if err != nil {
			d.Logger.WithError(err).Warn("summing stored media sizes failed")
		}
		return float64(n)
	})
	m := &internal.Media{DB: db, Blobs: blobs, ServerName: d.ServerName, Cfg: d.Cfg, Metrics: metrics, Logger: d.Logger}
	if d.Federation != nil {
		timeout := d.RequestTimeout
		if timeout <= 0 {
			timeout = time.Minute
		}
		tr := &http.Transport{Proxy: nil, DialContext: d.Deny.Dialer(5*time.Second, 30*time.Second).DialContext,
			TLSHandshakeTimeout: 10 * time.Second, IdleConnTimeout: 90 * time.Second}
		m.Remote = &internal.Remote{Client: d.Federation, HTTP: &http.Client{Transport: tr, Timeout: timeout}, Origin: d.ServerName,
			DB: db, Blobs: blobs, Cfg: d.Cfg, Metrics: metrics, Timeout: timeout}
	}
	rt := &routing.Routing{Media: m, DeviceLookup: d.DeviceLookup, Verifier: d.Verifier}
	if d.Cfg.URLPreview.Enabled {
		base := http.DefaultTransport.(*http.Transport).Clone()
		base.TLSClientConfig = d.PreviewTLS
		rt.Previewer = internal.NewPreviewer(internal.PreviewerDeps{Media: m, Cfg: d.Cfg.URLPreview, Deny: d.Deny, Transport: base,
			CacheBytes: d.CacheBudget.Share(previewCacheShare)})
	}
	return &MediaAPI{routing: rt}, nil
}

// Routes are the client media endpoints (uploads go through the media body limit,
// max_file_size_bytes, not the client API's).
func (a *MediaAPI) Routes() []httputil.Route {
	return a.routing.Routes()
}

// FederationRoutes are the federation media endpoints.
func (a *MediaAPI) FederationRoutes() []httputil.Route {
	return a.routing.FederationRoutes()
}
