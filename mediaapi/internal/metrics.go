package internal

import (
	"errors"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the media repository's counters. A nil *Metrics records nothing.
type Metrics struct {
	uploads, downloads  prometheus.Counter
	uploadedBytes       prometheus.Counter
	remoteFetches       *prometheus.CounterVec
	thumbnailSeconds    prometheus.Histogram
	thumbnailsGenerated prometheus.Counter
}

// NewMetrics registers the media metrics on reg; storedBytes is called at every scrape.
func NewMetrics(reg prometheus.Registerer, storedBytes func() float64) *Metrics {
	m := &Metrics{
		uploads:       prometheus.NewCounter(prometheus.CounterOpts{Name: "dendrite_mediaapi_uploads_total", Help: "Media uploads stored."}),
		downloads:     prometheus.NewCounter(prometheus.CounterOpts{Name: "dendrite_mediaapi_downloads_total", Help: "Media downloads and thumbnails served."}),
		uploadedBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "dendrite_mediaapi_uploaded_bytes_total", Help: "Bytes of media uploads stored."}),
		remoteFetches: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dendrite_mediaapi_remote_fetches_total",
			Help: "Fetches of other servers' media, by outcome."}, []string{"outcome"}),
		thumbnailSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "dendrite_mediaapi_thumbnail_duration_seconds",
			Help: "Time to generate a thumbnail.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}),
		thumbnailsGenerated: prometheus.NewCounter(prometheus.CounterOpts{Name: "dendrite_mediaapi_thumbnails_generated_total", Help: "Thumbnails generated."}),
	}
	if reg != nil {
		reg.MustRegister(m.uploads, m.downloads, m.uploadedBytes, m.remoteFetches, m.thumbnailSeconds, m.thumbnailsGenerated,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "dendrite_mediaapi_stored_bytes", Help: "Bytes of media content the metadata names."}, storedBytes))
	}
	return m
}

func (m *Metrics) uploaded(size int64) {
	if m != nil {
		m.uploads.Inc()
		m.uploadedBytes.Add(float64(size))
	}
}

// Downloaded counts a download or thumbnail served.
func (m *Metrics) Downloaded() {
	if m != nil {
		m.downloads.Inc()
	}
}

func (m *Metrics) remote(outcome string) {
	if m != nil {
		m.remoteFetches.WithLabelValues(outcome).Inc()
	}
}

func (m *Metrics) thumbnail(took time.Duration) {
	if m != nil {
		m.thumbnailsGenerated.Inc()
		m.thumbnailSeconds.Observe(took.Seconds())
	}
}

// isMaxBytes reports a request body cut by the server's body limit.
func isMaxBytes(err error) bool {
	var tooBig *http.MaxBytesError
	return errors.As(err, &tooBig)
}
