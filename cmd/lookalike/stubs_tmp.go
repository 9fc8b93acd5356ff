package main

import (
	"context"
	"errors"
)

func runServe(ctx context.Context, a *app, args []string) error  { return errors.New("todo") }
func runBackup(ctx context.Context, a *app, args []string) error { return errors.New("todo") }
func runEmbed(ctx context.Context, a *app, args []string) error  { return errors.New("todo") }
func runModel(ctx context.Context, a *app, args []string) error  { return errors.New("todo") }
