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
		{Name: "read", Method: http.MethodGet, Path: "/read", Handler: Authenticated(lookup, func(_ *http.Request, u user) (Response, error) {
			return OK(map[string]string{"user_id": string(u)}), nil
		})},
	}
	logger := logrus.New()
	logger.SetLevel(logrus.PanicLevel)
	srv := &Server{Component: "test", Logger: logrus.NewEntry(logger), MaxBodyBytes: maxBody, RateLimiter: limiter}
	router := mux.NewRouter()
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
