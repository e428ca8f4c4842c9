package httputil

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gorilla/mux"
	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/internal/matrixerr"
)

type user string

func (u user) String() string { return string(u) }

func testServer(t *testing.T, limiter *RateLimiter, maxBody int64) *httptest.Server {
	t.Helper()
	lookup := func(_ context.Context, token string) (user, error) {
		if token == "good" {
			return user("@a:b"), nil
		}
		return "", matrixerr.UnknownToken("unknown token")
	}
	routes := []Route{
		{Name: "echo", Method: http.MethodPost, Path: "/echo", Handler: func(r *http.Request) (Response, error) {
			var body map[string]any
			if err := DecodeJSON(r, &body); err != nil {
				return Response{}, err
			}
			return OK(body), nil
		}},
		{Name: "internal", Method: http.MethodGet, Path: "/internal", Handler: func(*http.Request) (Response, error) {
			return Response{}, errors.New("secret detail of a database failure")
		}},
		{Name: "panic", Method: http.MethodGet, Path: "/panic", Handler: func(*http.Request) (Response, error) {
			panic("boom")
		}},
		{Name: "me", Method: http.MethodPut, Path: "/me", Handler: Authenticated(lookup, func(_ *http.Request, u user) (Response, error) {
			return OK(map[string]string{"user_id": string(u)}), nil
		})},
		{Name: "var", Method: http.MethodGet, Path: "/var/{v}", Handler: func(r *http.Request) (Response, error) {
			return OK(map[string]string{"v": Vars(r)["v"], "q": r.URL.Query().Get("q")}), nil
		}},
		{Name: "read", Method: http.MethodGet, Path: "/read", Handler: Authenticated(lookup, func(_ *http.Request, u user) (Response, error) {
			return OK(map[string]string{"user_id": string(u)}), nil
		})},
	}
	logger := logrus.New()
	logger.SetLevel(logrus.PanicLevel)
	srv := &Server{Component: "test", Logger: logrus.NewEntry(logger), MaxBodyBytes: maxBody, RateLimiter: limiter}
	router := mux.NewRouter().UseEncodedPath()
	Unmatched(router)
	srv.Register(router, routes)
	ts := httptest.NewServer(router)
	t.Cleanup(ts.Close)
	return ts
}

func do(t *testing.T, method, url, token, body string) (int, map[string]any, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("%s %s: body is not JSON: %v", method, url, err)
	}
	return resp.StatusCode, out, resp.Header
}

func TestErrorsMapToMatrixJSON(t *testing.T) {
	ts := testServer(t, nil, 100)
	for _, tc := range []struct {
		name, method, path, token, body string
		status                          int
		code                            string
	}{
		{"not json", http.MethodPost, "/echo", "", "{nope", 400, "M_NOT_JSON"},
		{"wrong shape", http.MethodPost, "/echo", "", `[1,2]`, 400, "M_BAD_JSON"},
		{"too large", http.MethodPost, "/echo", "", `{"a":"` + strings.Repeat("x", 200) + `"}`, 413, "M_TOO_LARGE"},
		{"internal error hidden", http.MethodGet, "/internal", "", "", 500, "M_UNKNOWN"},
		{"panic recovered", http.MethodGet, "/panic", "", "", 500, "M_UNKNOWN"},
		{"missing token", http.MethodPut, "/me", "", "", 401, "M_MISSING_TOKEN"},
		{"unknown token", http.MethodPut, "/me", "bad", "", 401, "M_UNKNOWN_TOKEN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body, hdr := do(t, tc.method, ts.URL+tc.path, tc.token, tc.body)
			if status != tc.status || body["errcode"] != tc.code {
				t.Fatalf("got %d %v, want %d %s", status, body, tc.status, tc.code)
			}
			if strings.Contains(body["error"].(string), "secret") {
				t.Fatalf("internal detail leaked: %v", body)
			}
			if hdr.Get("Access-Control-Allow-Origin") != "*" {
				t.Fatal("no CORS header on an error")
			}
		})
	}
	if status, body, _ := do(t, http.MethodPut, ts.URL+"/me", "good", ""); status != 200 || body["user_id"] != "@a:b" {
		t.Fatalf("authenticated request: %d %v", status, body)
	}
}

func TestRateLimitChargesWritesNotReads(t *testing.T) {
	ts := testServer(t, NewRateLimiter(0.001, 2, nil), 1000)
	for i := 0; i < 2; i++ {
		if status, body, _ := do(t, http.MethodPut, ts.URL+"/me", "good", ""); status != 200 {
			t.Fatalf("request %d within the burst: %d %v", i, status, body)
		}
	}
	status, body, hdr := do(t, http.MethodPut, ts.URL+"/me", "good", "")
	if status != http.StatusTooManyRequests || body["errcode"] != "M_LIMIT_EXCEEDED" || body["retry_after_ms"].(float64) <= 0 || hdr.Get("Retry-After") == "" {
		t.Fatalf("over the limit: %d %v", status, body)
	}
	for i := 0; i < 5; i++ {
		if status, body, _ := do(t, http.MethodGet, ts.URL+"/read", "good", ""); status != 200 {
			t.Fatalf("reads must not be limited: %d %v", status, body)
		}
	}
	// Unauthenticated writes are charged to the IP, which has its own bucket.
	for i := 0; i < 2; i++ {
		if status, _, _ := do(t, http.MethodPost, ts.URL+"/echo", "", "{}"); status != 200 {
			t.Fatalf("anonymous request %d: %d", i, status)
		}
	}
	if status, body, _ := do(t, http.MethodPost, ts.URL+"/echo", "", "{}"); status != http.StatusTooManyRequests {
		t.Fatalf("anonymous over the limit: %d %v", status, body)
	}
}

// TestRefusesTextItWouldRewrite: encoding/json turns bytes that are not UTF-8 and lone
// surrogate escapes into U+FFFD, and url.PathUnescape errors used to leave a variable raw, so
// the server acted on text the client did not send; NUL cannot be stored in PostgreSQL text,
// and numbers beyond int64 fit no handler's field. Each is refused before a handler runs.
func TestRefusesTextItWouldRewrite(t *testing.T) {
	ts := testServer(t, nil, 1000)
	for _, tc := range []struct {
		name, method, path, body string
		status                   int
		code                     string
	}{
		{"invalid UTF-8 in a string", http.MethodPost, "/echo", "{\"a\":\"\xff\"}", 400, "M_NOT_JSON"},
		{"invalid UTF-8 in a key", http.MethodPost, "/echo", "{\"\xc3\x28\":1}", 400, "M_NOT_JSON"},
		{"lone high surrogate", http.MethodPost, "/echo", `{"a":"\ud800"}`, 400, "M_NOT_JSON"},
		{"high surrogate then a letter", http.MethodPost, "/echo", `{"a":"\ud800x\udc00"}`, 400, "M_NOT_JSON"},
		{"two high surrogates", http.MethodPost, "/echo", `{"a":"\ud800\ud800"}`, 400, "M_NOT_JSON"},
		{"lone low surrogate", http.MethodPost, "/echo", `{"\udc00":1}`, 400, "M_NOT_JSON"},
		{"surrogate at the end", http.MethodPost, "/echo", `"\uDBFF"`, 400, "M_NOT_JSON"},
		{"NUL escape", http.MethodPost, "/echo", `{"a":"x\u0000"}`, 400, "M_BAD_JSON"},
		{"NUL escape in a key", http.MethodPost, "/echo", `{"\u0000":1}`, 400, "M_BAD_JSON"},
		{"huge integer", http.MethodPost, "/echo", `{"a":[9223372036854775808]}`, 400, "M_BAD_JSON"},
		{"beyond float64", http.MethodPost, "/echo", `{"a":1e400}`, 400, "M_BAD_JSON"},
		{"negative beyond int64", http.MethodPost, "/echo", `{"a":-9223372036854775809}`, 400, "M_BAD_JSON"},
		{"exponent beyond int64", http.MethodPost, "/echo", `{"a":1e19}`, 400, "M_BAD_JSON"},
		{"path variable not UTF-8", http.MethodGet, "/var/%FF", "", 400, "M_INVALID_PARAM"},
		{"path variable NUL", http.MethodGet, "/var/a%00b", "", 400, "M_INVALID_PARAM"},
		{"query not UTF-8", http.MethodGet, "/var/a?q=%C3%28", "", 400, "M_INVALID_PARAM"},
		{"query NUL", http.MethodGet, "/var/a?q=%00", "", 400, "M_INVALID_PARAM"},
		{"query bad escape", http.MethodGet, "/var/a?q=%G1", "", 400, "M_INVALID_PARAM"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body, _ := do(t, tc.method, ts.URL+tc.path, "", tc.body)
			if status != tc.status || body["errcode"] != tc.code {
				t.Fatalf("got %d %v, want %d %s", status, body, tc.status, tc.code)
			}
		})
	}
	for body, want := range map[string]string{
		`{"a":"\ud83d\ude00"}`:     "\U0001F600",
		`{"a":"\\ud800 é \u00e9"}`: `\ud800 é é`,
		`{"a":"\\u0000"}`:          `\u0000`,
	} {
		status, got, _ := do(t, http.MethodPost, ts.URL+"/echo", "", body)
		if status != 200 || got["a"] != want {
			t.Fatalf("%s: %d %v, want %q", body, status, got, want)
		}
	}
	if status, got, _ := do(t, http.MethodPost, ts.URL+"/echo", "", `{"a":[9223372036854775807,-9223372036854775808,0.5,-1e3,1e-400]}`); status != 200 {
		t.Fatalf("numbers in range: %d %v", status, got)
	}
	if status, got, _ := do(t, http.MethodGet, ts.URL+"/var/%40a%3Ab%2Fc?q=%C3%A9", "", ""); status != 200 || got["v"] != "@a:b/c" || got["q"] != "é" {
		t.Fatalf("valid escapes: %d %v", status, got)
	}
}

// TestUnmatchedRequests: what no route serves gets a Matrix error with CORS headers, and a
// preflight succeeds on any path without a token.
func TestUnmatchedRequests(t *testing.T) {
	ts := testServer(t, nil, 1000)
	for _, tc := range []struct {
		name, method, path string
		status             int
	}{
		{"unknown path", http.MethodGet, "/_matrix/client/v3/nope", 404},
		{"unknown path, POST", http.MethodPost, "/_synapse/nope", 404},
		{"wrong method", http.MethodDelete, "/echo", 405},
		{"wrong method, authenticated route", http.MethodPost, "/read", 405},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body, hdr := do(t, tc.method, ts.URL+tc.path, "", "")
			if status != tc.status || body["errcode"] != "M_UNRECOGNIZED" {
				t.Fatalf("got %d %v, want %d M_UNRECOGNIZED", status, body, tc.status)
			}
			checkCORS(t, hdr)
		})
	}
	for _, path := range []string{"/echo", "/me", "/_matrix/client/v3/nope", "/var/x"} {
		req, err := http.NewRequest(http.MethodOptions, ts.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Origin", "https://app.example")
		req.Header.Set("Access-Control-Request-Method", http.MethodPut)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close() // a preflight has no body to read
		if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNoContent {
			t.Fatalf("OPTIONS %s: %d", path, resp.StatusCode)
		}
		checkCORS(t, resp.Header)
	}
}

func checkCORS(t *testing.T, h http.Header) {
	t.Helper()
	if h.Get("Access-Control-Allow-Origin") != "*" {
		t.Fatalf("Access-Control-Allow-Origin %q", h.Get("Access-Control-Allow-Origin"))
	}
	for _, m := range []string{"GET", "POST", "PUT", "DELETE", "OPTIONS"} {
		if !strings.Contains(h.Get("Access-Control-Allow-Methods"), m) {
			t.Fatalf("Access-Control-Allow-Methods %q lacks %s", h.Get("Access-Control-Allow-Methods"), m)
		}
	}
	for _, hd := range []string{"X-Requested-With", "Content-Type", "Authorization"} {
		if !strings.Contains(h.Get("Access-Control-Allow-Headers"), hd) {
			t.Fatalf("Access-Control-Allow-Headers %q lacks %s", h.Get("Access-Control-Allow-Headers"), hd)
		}
	}
}

// FuzzCheckJSON: a body DecodeJSON accepts decodes without a replacement: every U+FFFD in its
// strings was written by the client (as the character or as \ufffd), and no string holds NUL.
func FuzzCheckJSON(f *testing.F) {
	for _, s := range []string{`{"a":"b"}`, `"\ud800"`, `"\ud83d\ude00"`, `"\\ud800"`, "\"\xff\"", `"\ufffd"`, "\"\xef\xbf\xbd\"",
		`[1,-2.5e3,9223372036854775807]`, `{"\u0000":1}`, `"\udc00\ud800"`, `"\\\ud800"`, `{"a":[{"b":"\u00e9"}]}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if !json.Valid(body) || checkJSON(body) != nil {
			return
		}
		var v any
		if err := json.Unmarshal(body, &v); err != nil {
			return // a number json.Valid takes that no float64 holds
		}
		written := strings.Count(string(body), "\ufffd") + strings.Count(strings.ToLower(string(body)), `\ufffd`)
		got := 0
		var walk func(any)
		walk = func(x any) {
			switch c := x.(type) {
			case string:
				got += strings.Count(c, "\ufffd")
				if strings.ContainsRune(c, 0) {
					t.Fatalf("%q: NUL accepted", body)
				}
			case []any:
				for _, e := range c {
					walk(e)
				}
			case map[string]any:
				for k, e := range c {
					walk(k)
					walk(e)
				}
			}
		}
		walk(v)
		if got > written {
			t.Fatalf("%q: decoded with %d replacement characters, %d written", body, got, written)
		}
	})
}
