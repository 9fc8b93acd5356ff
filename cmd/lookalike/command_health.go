package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

func runHealth(ctx context.Context, a *app, args []string) error {
	fs := newFlagSet(a, "health", "[flags]",
		"Ask the server's standard gRPC health service whether it is SERVING.\nWith --wait, keep asking until it is or the wait runs out (for scripts that start a server).")
	var cf clientFlags
	cf.register(fs, a)
	wait := fs.Duration("wait", 0, "keep polling up to this long for SERVING (0: ask once)")
	service := fs.String("service", "", "health service name to check (empty: the whole server)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usagef("takes no arguments")
	}
	c, err := cf.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	health := healthpb.NewHealthClient(c.conn)
	deadline := time.Now().Add(*wait)
	for {
		callCtx, cancel := c.call(ctx)
		resp, err := health.Check(callCtx, &healthpb.HealthCheckRequest{Service: *service})
		cancel()
		state := "UNKNOWN"
		if err == nil {
			state = resp.GetStatus().String()
			if resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
				fmt.Fprintln(a.stdout, state)
				return nil
			}
		} else if status.Code(err) == codes.Unimplemented {
			return fmt.Errorf("server %s has no health service: %w", cf.server, err)
		}
		if time.Now().After(deadline) {
			if err != nil {
				return describeRPCError(cf.server, err)
			}
			return fmt.Errorf("server %s is %s", cf.server, state)
		}
		select {
		case <-ctx.Done():
			return errors.New("interrupted")
		case <-time.After(200 * time.Millisecond):
		}
	}
}
