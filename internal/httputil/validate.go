package httputil

import (
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/gorilla/mux"

	"github.com/matrix-org/dendrite/internal/matrixerr"
)

// checkParams refuses, with 400 M_INVALID_PARAM, a request whose path variables or query
// parameters are malformed percent-encoding, are not UTF-8 or hold a NUL: the server would
// otherwise rewrite them (to U+FFFD) or keep them raw and act on, sign or store a string
// the client did not send, and PostgreSQL cannot store NUL in text at all.
func checkParams(r *http.Request) error {
	for name, v := range mux.Vars(r) {
		u, err := url.PathUnescape(v)
		if err != nil {
			return matrixerr.InvalidParam("the path parameter " + name + " is not valid percent-encoding")
		}
		if !validText(u) {
			return matrixerr.InvalidParam("the path parameter " + name + " must be UTF-8 without NUL characters")
		}
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return matrixerr.InvalidParam("the query string is not valid percent-encoding")
	}
	for k, vs := range q {
		if !validText(k) {
			return matrixerr.InvalidParam("a query parameter name must be UTF-8 without NUL characters")
		}
		for _, v := range vs {
			if !validText(v) {
				return matrixerr.InvalidParam("the query parameter " + k + " must be UTF-8 without NUL characters")
			}
		}
	}
	return nil
}

func validText(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsRune(s, 0)
}

// checkJSON refuses what encoding/json would silently change or what cannot be stored the
// same on both engines, in a body json.Valid accepted: bytes that are not UTF-8 and lone
// surrogate escapes (both become U+FFFD: 400 M_NOT_JSON, the body is not UTF-8 JSON), and
// NUL characters and numbers beyond the range of int64 (400 M_BAD_JSON: PostgreSQL text
// cannot hold NUL, and no handler can take such a number as the client wrote it).
func checkJSON(body []byte) error {
	if !utf8.Valid(body) {
		return matrixerr.NotJSON("the request body is not UTF-8")
	}
	for i := 0; i < len(body); i++ {
		switch c := body[i]; {
		case c == '"':
			end, err := scanString(body, i+1)
			if err != nil {
				return err
			}
			i = end
		case c == '-' || (c >= '0' && c <= '9'):
			end := i + 1
			for end < len(body) && strings.IndexByte("+-.0123456789eE", body[end]) >= 0 {
				end++
			}
			if !int64Range(string(body[i:end])) {
				return matrixerr.BadJSON("numbers must lie between -2^63 and 2^63-1")
			}
			i = end - 1
		}
	}
	return nil
}

// int64Range reports whether the JSON number n lies in the range of int64, the widest
// integer a handler decodes into (an integer literal exactly; others as float64).
func int64Range(n string) bool {
	if !strings.ContainsAny(n, ".eE") {
		_, err := strconv.ParseInt(n, 10, 64)
		return err == nil
	}
	f, err := strconv.ParseFloat(n, 64)
	return err == nil && math.Abs(f) < 1<<63
}

// scanString checks the JSON string whose content starts at body[i] and returns the index
// of its closing quote. The body is valid JSON, so every escape is complete.
func scanString(body []byte, i int) (int, error) {
	for ; body[i] != '"'; i++ {
		if body[i] != '\\' {
			continue
		}
		i++
		if body[i] != 'u' {
			continue
		}
		r := hex4(body[i+1 : i+5])
		i += 4
		switch {
		case r == 0:
			return 0, matrixerr.BadJSON("strings must not contain NUL characters (\\u0000)")
		case utf16.IsSurrogate(r) && r < 0xdc00:
			if i+6 < len(body) && body[i+1] == '\\' && body[i+2] == 'u' {
				if lo := hex4(body[i+3 : i+7]); lo >= 0xdc00 && lo <= 0xdfff {
					i += 6
					continue
				}
			}
			return 0, matrixerr.NotJSON("the request body has a lone surrogate escape")
		case utf16.IsSurrogate(r):
			return 0, matrixerr.NotJSON("the request body has a lone surrogate escape")
		}
	}
	return i, nil
}

// hex4 decodes four hex digits (valid, as json.Valid checked).
func hex4(b []byte) rune {
	v, _ := strconv.ParseUint(string(b), 16, 32) // json.Valid guarantees four hex digits
	return rune(v)
}
