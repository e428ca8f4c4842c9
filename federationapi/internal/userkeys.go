package internal

import (
	"context"
	"encoding/json"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/federationapi/api"
	"github.com/matrix-org/dendrite/internal/matrixerr"
)

// ofServer reports whether userID is a user of server.
func ofServer(userID string, server spec.ServerName) bool {
	uid, err := spec.NewUserID(userID, true)
	return err == nil && uid.Domain() == server
}

// remoteServer checks a key request's server: a valid name that is not ours.
func (m *Membership) remoteServer(name string) (spec.ServerName, error) {
	server := spec.ServerName(name)
	if _, _, ok := spec.ParseAndValidateServerName(server); !ok || server == m.ServerName {
		return "", matrixerr.InvalidParam("not another server: " + name)
	}
	return server, nil
}

// ClaimRemoteKeys implements api.ClientFederationAPI.
func (m *Membership) ClaimRemoteKeys(ctx context.Context, req *api.ClaimRemoteKeysRequest) (*api.ClaimRemoteKeysResponse, error) {
	server, err := m.remoteServer(req.Server)
	if err != nil {
		return nil, err
	}
	ask := map[string]map[string]string{}
	for userID, devices := range req.OneTimeKeys {
		if ofServer(userID, server) {
			ask[userID] = devices
		}
	}
	out := &api.ClaimRemoteKeysResponse{OneTimeKeys: map[string]map[string]map[string]json.RawMessage{}}
	if len(ask) == 0 {
		return out, nil
	}
	res, err := m.Client.ClaimKeys(ctx, m.ServerName, server, ask)
	if err != nil {
		return nil, askFailure(err, server, "no keys at "+req.Server)
	}
	for userID, devices := range res.OneTimeKeys {
		for deviceID, keys := range devices {
			alg, asked := ask[userID][deviceID]
			if !asked || len(keys) != 1 {
				continue
			}
			for keyID, key := range keys {
				if !strings.HasPrefix(keyID, alg+":") {
					continue
				}
				if out.OneTimeKeys[userID] == nil {
					out.OneTimeKeys[userID] = map[string]map[string]json.RawMessage{}
				}
				out.OneTimeKeys[userID][deviceID] = map[string]json.RawMessage{keyID: key}
			}
		}
	}
	return out, nil
}
