package testenv

import (
	"context"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

func TestS3Server(t *testing.T) {
	srv := StartS3(t)
	u := srv.CreateBucket(t, "replica-west")
	if !strings.HasPrefix(u, "s3://replica-west?") || !strings.Contains(u, "endpoint=") {
		t.Errorf("URL = %q", u)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := srv.Client()
	key := "notebooks/run 1/ß#%.ipynb"
	if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("replica-west"), Key: aws.String(key), Body: strings.NewReader("{}")}); err != nil {
		t.Fatal(err)
	}
	out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("replica-west"), Key: aws.String(key)})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(out.Body)
	out.Body.Close()
	if string(body) != "{}" {
		t.Errorf("body = %q", body)
	}
	if b, err := os.ReadFile(srv.ObjectPath("replica-west", key)); err != nil || string(b) != "{}" {
		t.Errorf("backend file: %q, %v", b, err)
	}
	// A wrong secret is refused.
	bad := s3.New(s3.Options{
		Region:       S3Region,
		BaseEndpoint: aws.String(srv.Endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(srv.AccessKey, "wrong-secret", ""),
	})
	if _, err := bad.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String("replica-west")}); err == nil {
		t.Error("a wrong secret listed the bucket")
	}
	srv.Kill(t)
	if _, err := c.ListBuckets(ctx, &s3.ListBucketsInput{}, func(o *s3.Options) { o.RetryMaxAttempts = 1 }); err == nil {
		t.Error("killed server still answers")
	}
}
