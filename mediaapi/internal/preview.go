package internal

import (
	"context"
	"errors"
	"fmt"
	"image"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/net/html"
	"golang.org/x/net/html/atom"
	"golang.org/x/net/html/charset"
	"golang.org/x/sync/singleflight"

	"github.com/matrix-org/dendrite/internal/caching"
	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	"github.com/matrix-org/dendrite/internal/outbound"
)

const (
	// previewTTL is how long a preview is served from the cache before the page is fetched
	// again.
	previewTTL = time.Hour
	// maxPreviewURL bounds the URL a client asks about.
	maxPreviewURL = 2048
	// maxRedirects bounds the redirects one page fetch follows.
	maxRedirects = 5
	// maxOGValue bounds one property's value (runes), maxOGProperties their number.
	maxOGValue      = 1000
	maxOGProperties = 50
	// maxOGKey bounds a property's name (bytes); longer or invalid UTF-8 ones are skipped.
	maxOGKey = 100
)

// Preview is the OpenGraph data of a URL, as the spec's preview_url answers it: og:*
// strings, og:image an mxc URI, and the image's og:image:width, og:image:height and
// matrix:image:size as integers.
type Preview map[string]any

// Previewer fetches pages for previews (media_api.url_preview). Its HTTP client dials
// through the global.deny_networks dialer, so the page's address, every redirect's and the
// image's are checked after DNS resolution. Previews are cached (bounded, for previewTTL);
// concurrent requests for one URL share one fetch.
type Previewer struct {
	media *Media
	http  *http.Client
	cfg   config.URLPreview
	cache *caching.Cache[string, cachedPreview]
	group singleflight.Group
}

type cachedPreview struct {
	preview Preview
	fetched time.Time
}

// PreviewerDeps is what a Previewer is made of.
type PreviewerDeps struct {
	// Media stores the pages' images.
	Media *Media
	Cfg   config.URLPreview
	// Deny are the networks no fetch may reach (global.deny_networks).
	Deny *outbound.Policy
	// Transport is the base transport (its TLS settings are kept); its dialer is replaced
	// by the deny-list dialer and its proxy removed.
	Transport *http.Transport
	// CacheBytes bounds the cache.
	CacheBytes int64
}

// NewPreviewer makes a Previewer.
func NewPreviewer(d PreviewerDeps) *Previewer {
	tr := d.Transport.Clone()
	tr.Proxy = nil // a proxy's address would be checked instead of the page's
	// A connection per fetch: previews go to many hosts once, and some small servers (sytest's
	// among them) read a second request on a kept-alive connection as the first one's body.
	tr.DisableKeepAlives = true
	tr.DialContext = d.Deny.Dialer(5*time.Second, 30*time.Second).DialContext
	client := &http.Client{Transport: tr, Timeout: time.Duration(d.Cfg.Timeout), CheckRedirect: checkRedirect}
	weigh := func(k string, v cachedPreview) int {
		n := len(k)
		for key, val := range v.preview {
			n += len(key) + 16
			if s, ok := val.(string); ok {
				n += len(s)
			}
		}
		return n
	}
	return &Previewer{media: d.Media, http: client, cfg: d.Cfg,
		cache: caching.New("mediaapi_url_previews", d.CacheBytes, weigh, nil)}
}

// checkRedirect follows at most maxRedirects redirects, to http and https URLs only (the
// dialer checks where each one goes).
func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) > maxRedirects {
		return errTooManyRedirects
	}
	if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
		return errBadRedirect
	}
	return nil
}

var (
	errTooManyRedirects = errors.New("too many redirects")
	errBadRedirect      = errors.New("redirect to a URL that is not http or https")
)

// ParsePreviewURL checks a URL a client asks to preview: absolute http or https, with a
// host and no credentials (400 M_INVALID_PARAM otherwise). The fragment is dropped.
func ParsePreviewURL(raw string) (*url.URL, error) {
	if len(raw) > maxPreviewURL {
		return nil, matrixerr.InvalidParam(fmt.Sprintf("url must be at most %d bytes", maxPreviewURL))
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" || u.User != nil {
		return nil, matrixerr.InvalidParam("url must be an absolute http or https URL without credentials")
	}
	u.Fragment, u.RawFragment = "", ""
	return u, nil
}

// Preview returns the preview of u for userID (who is recorded as the uploader of its
// image): from the cache, or fetched. 403 M_FORBIDDEN when the page or a redirect is in a
// denied network, 502 when it cannot be fetched or answers an error, 504 when it takes
// longer than url_preview.timeout.
func (p *Previewer) Preview(ctx context.Context, userID string, u *url.URL) (Preview, error) {
	key := u.String()
	if c, ok := p.cache.Get(key); ok && time.Since(c.fetched) < previewTTL {
		return c.preview, nil
	}
	ch := p.group.DoChan(key, func() (any, error) {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Duration(p.cfg.Timeout))
		defer cancel()
		preview, err := p.fetch(fctx, userID, u)
		if err != nil {
			return nil, err
		}
		p.cache.Put(key, cachedPreview{preview: preview, fetched: time.Now()})
		return preview, nil
	})
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case res := <-ch:
		if res.Err != nil {
			return nil, res.Err
		}
		return res.Val.(Preview), nil
	}
}

// get fetches u; the caller closes the body.
func (p *Previewer) get(ctx context.Context, u *url.URL, accept string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, matrixerr.InvalidParam("url is not a valid URL")
	}
	req.Header.Set("Accept", accept)
	req.Header.Set("User-Agent", "Dendrite URL preview")
	res, err := p.http.Do(req)
	switch {
	case errors.Is(err, outbound.ErrDenied):
		return nil, matrixerr.Forbidden("the URL's address is in a network this server does not fetch from")
	case isTimeout(err) || (err != nil && ctx.Err() != nil):
		return nil, matrixerr.GatewayTimeout("fetching the URL took too long")
	case err != nil:
		return nil, matrixerr.BadGateway("the URL could not be fetched")
	}
	if res.StatusCode != http.StatusOK {
		_ = res.Body.Close() // nolint: errcheck // nothing read
		return nil, matrixerr.BadGateway(fmt.Sprintf("the URL answered %d", res.StatusCode))
	}
	return res, nil
}

// isTimeout is an error of a request that ran out of time.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

func (p *Previewer) fetch(ctx context.Context, userID string, u *url.URL) (Preview, error) {
	res, err := p.get(ctx, u, "text/html, application/xhtml+xml, image/*;q=0.9, */*;q=0.1")
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()                                                 // nolint: errcheck // read below
	mediaType, _, _ := mime.ParseMediaType(res.Header.Get("Content-Type")) // unparsable: no preview
	switch {
	case strings.HasPrefix(mediaType, "image/"):
		preview := Preview{}
		if err := p.storeImage(ctx, userID, res, preview); err != nil {
			return nil, err
		}
		return preview, nil
	case mediaType != "text/html" && mediaType != "application/xhtml+xml":
		return Preview{}, nil
	}
	var page io.Reader = io.LimitReader(res.Body, p.cfg.MaxPageBytes)
	if utf8Page, err := charset.NewReader(page, res.Header.Get("Content-Type")); err == nil {
		page = utf8Page // the page's charset (header, BOM or <meta>) decoded to UTF-8
	}
	preview := ParseHTML(page)
	if img, ok := preview["og:image"].(string); ok {
		delete(preview, "og:image")
		if ref, err := res.Request.URL.Parse(img); err == nil && (ref.Scheme == "http" || ref.Scheme == "https") {
			p.pageImage(ctx, userID, ref, preview)
		}
	}
	return preview, nil
}

// pageImage fetches a page's og:image into the store and adds it to the preview; a page
// whose image cannot be fetched is previewed without one.
func (p *Previewer) pageImage(ctx context.Context, userID string, ref *url.URL, preview Preview) {
	res, err := p.get(ctx, ref, "image/*")
	if err != nil {
		p.media.Logger.WithError(err).Debug("a preview's image could not be fetched")
		return
	}
	defer res.Body.Close()                                                 // nolint: errcheck // read below
	mediaType, _, _ := mime.ParseMediaType(res.Header.Get("Content-Type")) // unparsable: no image
	if !strings.HasPrefix(mediaType, "image/") {
		return
	}
	if err := p.storeImage(ctx, userID, res, preview); err != nil {
		p.media.Logger.WithError(err).Debug("a preview's image could not be stored")
	}
}

// storeImage stores an image answer as media of ours and adds it to the preview: its
// mxc URI, type, size and (when its header decodes) dimensions.
func (p *Previewer) storeImage(ctx context.Context, userID string, res *http.Response, preview Preview) error {
	row, err := p.media.Store(ctx, &Upload{UserID: userID, ContentType: res.Header.Get("Content-Type"), Body: res.Body})
	if err != nil {
		var merr *matrixerr.Error
		if errors.As(err, &merr) {
			return matrixerr.BadGateway("the URL's image is too large or invalid")
		}
		return err
	}
	preview["og:image"] = "mxc://" + row.ServerName + "/" + row.MediaID
	preview["og:image:type"] = row.ContentType
	preview["matrix:image:size"] = row.Size
	f, err := p.media.Open(row.SHA256)
	if err != nil {
		return err
	}
	defer f.Close() // nolint: errcheck // read-only
	if cfg, _, err := image.DecodeConfig(f); err == nil {
		preview["og:image:width"], preview["og:image:height"] = cfg.Width, cfg.Height
	}
	return nil
}

// ParseHTML reads an HTML page's OpenGraph properties (<meta property="og:..."
// content="...">, first one wins; names longer than maxOGKey bytes or not UTF-8 are
// skipped), with the <title> as og:title and the description meta as og:description when
// the page has none. Values are cut to maxOGValue runes and made valid UTF-8; at most
// maxOGProperties are kept. A page cut off in the middle is parsed as far as it goes.
func ParseHTML(r io.Reader) Preview {
	preview := Preview{}
	var title, description string
	set := func(k, v string) {
		if len(k) > maxOGKey || !utf8.ValidString(k) {
			return
		}
		if _, ok := preview[k]; !ok && len(preview) < maxOGProperties {
			preview[k] = clean(v)
		}
	}
	z := html.NewTokenizer(r)
	inTitle := false
	for {
		switch z.Next() {
		case html.ErrorToken:
			if title != "" {
				set("og:title", title)
			}
			if description != "" {
				set("og:description", description)
			}
			return preview
		case html.StartTagToken, html.SelfClosingTagToken:
			t := z.Token()
			switch t.DataAtom {
			case atom.Title:
				inTitle = title == ""
			case atom.Meta:
				property, name, content := attrs(t)
				switch {
				case strings.HasPrefix(property, "og:"):
					set(property, content)
				case strings.HasPrefix(name, "og:"):
					set(name, content)
				case name == "description" && description == "":
					description = content
				}
			}
		case html.TextToken:
			if inTitle {
				title = strings.TrimSpace(string(z.Text()))
				inTitle = false
			}
		case html.EndTagToken:
			inTitle = false
		}
	}
}

// attrs are a meta tag's property, name (lower case) and content.
func attrs(t html.Token) (property, name, content string) {
	for _, a := range t.Attr {
		switch strings.ToLower(a.Key) {
		case "property":
			property = strings.ToLower(a.Val)
		case "name":
			name = strings.ToLower(a.Val)
		case "content":
			content = a.Val
		}
	}
	return property, name, content
}

// clean makes a value valid UTF-8 of at most maxOGValue runes.
func clean(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if utf8.RuneCountInString(s) <= maxOGValue {
		return s
	}
	return string([]rune(s)[:maxOGValue])
}
