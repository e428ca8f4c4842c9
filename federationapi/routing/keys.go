package routing

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/httputil"
	"github.com/matrix-org/dendrite/internal/matrixerr"
)

// maxNotaryServers bounds the servers one notary query may ask about.
const maxNotaryServers = 100

// KeyServer is GET /_matrix/key/v2/server: our keys, signed, valid for
// federation_api.key_validity_period, with our retired keys under old_verify_keys.
func (rt *Routing) KeyServer(*http.Request) (httputil.Response, error) {
	b, err := rt.Keys.ServerKeys()
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(json.RawMessage(b)), nil
}

type notaryResponse struct {
	ServerKeys []json.RawMessage `json:"server_keys"`
}

// KeyQuery is POST /_matrix/key/v2/query: the notary for several servers at once.
func (rt *Routing) KeyQuery(r *http.Request) (httputil.Response, error) {
	var body gomatrixserverlib.PublicKeyNotaryLookupRequest
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return httputil.Response{}, err
	}
	if body.ServerKeys == nil {
		return httputil.Response{}, matrixerr.MissingParam("server_keys is required")
	}
	return rt.notary(r, body.ServerKeys)
}

// KeyQueryServer is GET /_matrix/key/v2/query/{serverName}[?minimum_valid_until_ts=TS].
func (rt *Routing) KeyQueryServer(r *http.Request) (httputil.Response, error) {
	server := spec.ServerName(httputil.Vars(r)["serverName"])
	var c gomatrixserverlib.PublicKeyNotaryQueryCriteria
	if v := r.URL.Query().Get("minimum_valid_until_ts"); v != "" {
		ts, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return httputil.Response{}, matrixerr.InvalidParam("minimum_valid_until_ts must be a timestamp in milliseconds")
		}
		c.MinimumValidUntilTS = spec.Timestamp(ts)
	}
	return rt.notary(r, map[spec.ServerName]map[gomatrixserverlib.KeyID]gomatrixserverlib.PublicKeyNotaryQueryCriteria{server: {"": c}})
}

func (rt *Routing) notary(r *http.Request, criteria map[spec.ServerName]map[gomatrixserverlib.KeyID]gomatrixserverlib.PublicKeyNotaryQueryCriteria) (httputil.Response, error) {
	if len(criteria) > maxNotaryServers {
		return httputil.Response{}, matrixerr.InvalidParam("too many servers in one query")
	}
	for server := range criteria {
		if _, _, ok := spec.ParseAndValidateServerName(server); !ok {
			return httputil.Response{}, matrixerr.InvalidParam("invalid server name " + strconv.Quote(string(server)))
		}
	}
	keys, err := rt.Keys.NotaryQuery(r.Context(), criteria)
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(notaryResponse{ServerKeys: keys}), nil
}
