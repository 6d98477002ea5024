package cli

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/pairing"
	"github.com/contractual/contractual/internal/rpc"
)

// configDir holds this device's key and token: $CONTRACTUAL_CONFIG, else
// the user's config directory.
func configDir(env *Env) string {
	if d := env.getenv("CONTRACTUAL_CONFIG"); d != "" {
		return d
	}
	d, err := os.UserConfigDir()
	if err != nil {
		return "contractual-config"
	}
	return filepath.Join(d, "contractual")
}

// deviceTokenFile is where `contractual pair` keeps the device's token.
func deviceTokenFile(env *Env) string { return filepath.Join(configDir(env), "device.token") }

// pairCmd is the device side of pairing for the CLI: a key pair kept in the
// config directory, a request for the scopes asked for, the owner's
// approval (on a paired device, or with the server's setup code for an
// owner device), the proof of possession, and the token, kept 0600 in the
// config directory. Running it again after a failed step (a mistyped or
// expired setup code, a lost code) starts a new request at once.
func pairCmd(ctx context.Context, env *Env, args []string) error {
	var cf connectFlags
	fs := flag.NewFlagSet("pair", flag.ContinueOnError)
	cf.register(fs, env)
	name := fs.String("name", hostname(), "a name for this device")
	scope := fs.String("scope", "owner", "the scopes to ask for, comma-separated: "+strings.Join(pairing.ScopeNames(), ", ")+
		" (e.g. invoke for an agent's machine; the setup code always grants owner)")
	setup := fs.String("setup-code", "", "the setup code that contractual serve printed (while no owner device is paired)")
	wait := fs.Duration("wait", 5*time.Minute, "how long to wait for the owner's approval")
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	scopes, err := pairing.ParseScopes(*scope)
	if err != nil {
		return usagef("--scope: %v", err)
	}
	priv, err := deviceKey(configDir(env))
	if err != nil {
		return err
	}
	pc := contractualv1connect.NewPairingServiceClient(env.httpClient(), cf.server)
	begin, err := pc.BeginPairing(ctx, &contractualv1.BeginPairingRequest{
		PublicKey: priv.Public().(ed25519.PublicKey), Name: *name, Scopes: scopes.Names(), Kind: contractualv1.DeviceKind_DEVICE_KIND_CLIENT,
	})
	if err != nil {
		return rpc.FromConnect(err)
	}
	if *setup != "" {
		if _, err := pc.ApproveWithSetupCode(ctx, &contractualv1.ApproveWithSetupCodeRequest{RequestCode: begin.GetCode(), SetupCode: *setup}); err != nil {
			return errs.Wrap(errs.KindOf(rpc.FromConnect(err)), rpc.FromConnect(err), "the setup code was refused (fix it and run `contractual pair` again)")
		}
	} else {
		fmt.Fprintf(env.Stdout, "pairing request %s for device %s (%s), scopes %s\napprove it on a paired device: contractual devices approve %s\n",
			begin.GetCode(), begin.GetDeviceId(), *name, strings.Join(begin.GetScopes(), ","), begin.GetCode())
	}
	req := &contractualv1.CompletePairingRequest{
		DeviceId:  begin.GetDeviceId(),
		Nonce:     begin.GetNonce(),
		Signature: ed25519.Sign(priv, pairing.SignedMessage(begin.GetDeviceId(), begin.GetNonce())),
	}
	deadline := time.Now().Add(*wait)
	for {
		done, err := pc.CompletePairing(ctx, req)
		err = rpc.FromConnect(err)
		switch {
		case err == nil:
			if err := writeSecretFile(deviceTokenFile(env), []byte(done.GetToken()+"\n")); err != nil {
				return err
			}
			if err := rememberServer(env, cf.server); err != nil {
				return err
			}
			fmt.Fprintf(env.Stdout, "paired as %s with %s, scopes %s; token in %s (it expires %s unless used before)\n",
				done.GetPrincipal(), cf.server, strings.Join(done.GetScopes(), ","), deviceTokenFile(env), done.GetExpiresAt().AsTime().Local().Format("2006-01-02"))
			return nil
		case !errs.Is(err, errs.FailedPrecondition) || !strings.Contains(err.Error(), "awaiting approval"):
			return err
		case time.Now().After(deadline):
			return errs.E(errs.DeadlineExceeded, "no approval within %s", *wait)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// deviceKey reads this device's Ed25519 key, creating it (0600) at first use.
func deviceKey(dir string) (ed25519.PrivateKey, error) {
	path := filepath.Join(dir, "device.key")
	seed, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		return priv, writeSecretFile(path, priv.Seed())
	}
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "reading the device key")
	}
	if len(seed) != ed25519.SeedSize {
		return nil, errs.E(errs.FailedPrecondition, "%s is not an Ed25519 seed", path)
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

// writeSecretFile writes b to path, mode 0600, in a 0700 directory.
func writeSecretFile(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return errs.Wrap(errs.Internal, err, "creating %s", filepath.Dir(path))
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return errs.Wrap(errs.Internal, err, "writing %s", path)
	}
	return nil
}

func hostname() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "cli"
	}
	return h
}

// devicesCmd lists and decides pairing requests and devices, as a paired
// device.
func devicesCmd(ctx context.Context, env *Env, args []string) error {
	var cf connectFlags
	fs := flag.NewFlagSet("devices", flag.ContinueOnError)
	cf.register(fs, env)
	state := fs.String("state", "", "only devices in this state: active, revoked or expired (list)")
	scope := fs.String("scope", "", "only devices whose scopes include this one (list)")
	var lf listFlags
	lf.register(fs)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("want a subcommand: list, requests, approve, reject, revoke")
	}
	sub, pos := pos[0], pos[1:]
	c, err := cf.dial(env)
	if err != nil {
		return err
	}
	one := func(what string) (string, error) {
		if len(pos) != 1 {
			return "", usagef("want one %s", what)
		}
		return pos[0], nil
	}
	const stamp = "2006-01-02 15:04"
	switch sub {
	case "list":
		st, ok := contractualv1.DeviceState_value["DEVICE_STATE_"+strings.ToUpper(*state)]
		if *state == "" {
			st, ok = 0, true
		}
		if !ok || *state != "" && st == 0 {
			return usagef("--state %q: want active, revoked or expired", *state)
		}
		now := time.Now()
		return lf.table(env, "ID\tNAME\tKIND\tSCOPES\tPAIRED\tAPPROVED BY\tLAST USED\tSTATUS", func(w io.Writer, tok string) (string, error) {
			resp, err := c.pairing.ListDevices(ctx, &contractualv1.ListDevicesRequest{
				State: contractualv1.DeviceState(st), Scope: *scope, PageSize: lf.size(), PageToken: tok,
			})
			for _, d := range resp.GetDevices() {
				status := "active until " + d.GetExpiresAt().AsTime().Local().Format(stamp) + " unless used"
				switch {
				case d.GetRevokedAt() != nil:
					status = "revoked " + d.GetRevokedAt().AsTime().Local().Format(stamp)
				case !d.GetExpiresAt().AsTime().After(now):
					status = "expired " + d.GetExpiresAt().AsTime().Local().Format(stamp)
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.GetId(), d.GetName(), kindName(d.GetKind()), strings.Join(d.GetScopes(), ","),
					d.GetPairedAt().AsTime().Local().Format(stamp), d.GetApprovedBy(), d.GetLastUsedAt().AsTime().Local().Format(stamp), status)
			}
			return resp.GetNextPageToken(), err
		})
	case "requests":
		return lf.table(env, "CODE\tDEVICE\tNAME\tKIND\tSCOPES ASKED\tEXPIRES", func(w io.Writer, tok string) (string, error) {
			resp, err := c.pairing.ListPairingRequests(ctx, &contractualv1.ListPairingRequestsRequest{PageSize: lf.size(), PageToken: tok})
			for _, r := range resp.GetRequests() {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", r.GetCode(), r.GetDeviceId(), r.GetName(), kindName(r.GetKind()),
					strings.Join(r.GetScopes(), ","), r.GetExpiresAt().AsTime().Local().Format("15:04:05"))
			}
			return resp.GetNextPageToken(), err
		})
	case "approve", "reject":
		code, err := one("request code")
		if err != nil {
			return err
		}
		if sub == "approve" {
			_, err = c.pairing.ApprovePairing(ctx, &contractualv1.ApprovePairingRequest{Code: code})
		} else {
			_, err = c.pairing.RejectPairing(ctx, &contractualv1.RejectPairingRequest{Code: code})
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(env.Stdout, "%s pairing request %s\n", map[string]string{"approve": "approved", "reject": "rejected"}[sub], code)
		return nil
	case "revoke":
		id, err := one("device id")
		if err != nil {
			return err
		}
		if id == thisDeviceID(env) {
			// Unpairing itself needs no scope.
			_, err = c.pairing.Unpair(ctx, &contractualv1.UnpairRequest{})
		} else {
			_, err = c.pairing.RevokeDevice(ctx, &contractualv1.RevokeDeviceRequest{DeviceId: id})
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(env.Stdout, "revoked %s\n", id)
		return nil
	}
	return usagef("unknown subcommand %q", sub)
}

// thisDeviceID is the id of this CLI's device key, or "" if it has none.
func thisDeviceID(env *Env) string {
	seed, err := os.ReadFile(filepath.Join(configDir(env), "device.key"))
	if err != nil || len(seed) != ed25519.SeedSize {
		return ""
	}
	return pairing.DeviceID(ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey))
}

// kindName names a device kind for listings.
func kindName(k contractualv1.DeviceKind) string {
	if k == contractualv1.DeviceKind_DEVICE_KIND_BROWSER {
		return "browser"
	}
	return "client"
}
