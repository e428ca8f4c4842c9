package internal

import (
	"context"
	"encoding/json"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/federationapi/api"
	"github.com/matrix-org/dendrite/internal/e2ekeys"
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

// QueryRemoteKeys implements api.ClientFederationAPI.
func (m *Membership) QueryRemoteKeys(ctx context.Context, req *api.QueryRemoteKeysRequest) (*api.QueryRemoteKeysResponse, error) {
	server, err := m.remoteServer(req.Server)
	if err != nil {
		return nil, err
	}
	ask := map[string][]string{}
	for userID, devices := range req.DeviceKeys {
		if ofServer(userID, server) {
			ask[userID] = devices
		}
	}
	out := &api.QueryRemoteKeysResponse{DeviceKeys: map[string]map[string]json.RawMessage{},
		MasterKeys: map[string]json.RawMessage{}, SelfSigningKeys: map[string]json.RawMessage{}}
	if len(ask) == 0 {
		return out, nil
	}
	res, err := m.Client.QueryKeys(ctx, m.ServerName, server, ask)
	if err != nil {
		return nil, askFailure(err, server, "no keys at "+req.Server)
	}
	logger := m.Logger.WithField("server", server)
	for userID, devices := range res.DeviceKeys {
		if _, asked := ask[userID]; !asked {
			logger.WithField("user_id", userID).Warn("ignoring keys of a user we did not ask for")
			continue
		}
		kept := map[string]json.RawMessage{}
		for deviceID, dk := range devices {
			raw, err := json.Marshal(dk)
			if err != nil {
				return nil, err
			}
			if err = e2ekeys.CheckDeviceKeys(raw, userID, deviceID); err != nil {
				logger.WithError(err).WithField("user_id", userID).Warn("ignoring device keys that are not the device's")
				continue
			}
			kept[deviceID] = raw
		}
		out.DeviceKeys[userID] = kept
	}
	for userID, mk := range res.MasterKeys {
		raw, err := json.Marshal(mk)
		if err != nil {
			return nil, err
		}
		master, err := e2ekeys.ParseCrossSigningKey(raw, userID, "master")
		if _, asked := ask[userID]; !asked || err != nil {
			logger.WithField("user_id", userID).Warn("ignoring a master key that is not sound")
			continue
		}
		out.MasterKeys[userID] = raw
		if sk, ok := res.SelfSigningKeys[userID]; ok {
			if raw, err = json.Marshal(sk); err != nil {
				return nil, err
			}
			if _, err := e2ekeys.ParseCrossSigningKey(raw, userID, "self_signing"); err != nil || !e2ekeys.SignedBy(raw, userID, master) {
				logger.WithField("user_id", userID).Warn("ignoring a self-signing key not signed by the master key")
				continue
			}
			out.SelfSigningKeys[userID] = raw
		}
	}
	return out, nil
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
