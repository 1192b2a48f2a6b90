package provider

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
)

const accessConfig = `
resource "omnisql_tenant" "globex" {
  id     = "tf-globex"
  name   = "Globex"
  region = "eu"
}

resource "omnisql_principal" "ann" {
  tenant = omnisql_tenant.globex.id
  id     = "ann"
  role   = "tenant_member"
}

resource "omnisql_api_key" "ann" {
  tenant    = omnisql_tenant.globex.id
  principal = omnisql_principal.ann.id
}

resource "omnisql_principal" "k8s" {
  tenant  = "_platform"
  id      = "tf-k8s-eu"
  kind    = "service_account"
  role    = "data_plane_operator"
  regions = ["eu"]
}

resource "omnisql_enrollment_token" "eu" {
  region = "eu"
}
`

// The key in the state authenticates as its principal: it is the key the control plane made.
func keyWorks(want bool) resource.TestCheckFunc {
	return func(s *terraform.State) error {
		key := lastKey
		if rs, ok := s.RootModule().Resources["omnisql_api_key.ann"]; ok {
			key = rs.Primary.Attributes["key"]
			lastKey = key
		}
		var me struct {
			ID string `json:"id"`
		}
		err := newClient(os.Getenv("OMNISQL_ADMIN_URL"), key).call(context.Background(), http.MethodGet, "/v1/me", nil, &me)
		switch {
		case want && err != nil:
			return fmt.Errorf("the created key does not work: %v", err)
		case want && me.ID != "ann":
			return fmt.Errorf("the key authenticates as %q", me.ID)
		case !want && err == nil:
			return fmt.Errorf("the key still works after destroy")
		}
		return nil
	}
}

var lastKey string

func TestAccAccess(t *testing.T) {
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: providers,
		CheckDestroy:             keyWorks(false),
		Steps: []resource.TestStep{
			{
				Config: accessConfig,
				Check: resource.ComposeAggregateTestCheckFunc(
					keyWorks(true),
					resource.TestCheckResourceAttrWith("omnisql_api_key.ann", "key", func(v string) error {
						if !strings.HasPrefix(v, "omk") {
							return fmt.Errorf("not an OmniSQL key: %.3s…", v)
						}
						return nil
					}),
					resource.TestCheckResourceAttrWith("omnisql_enrollment_token.eu", "token", func(v string) error {
						if !strings.HasPrefix(v, "omen") {
							return fmt.Errorf("not an enrollment token: %.4s…", v)
						}
						return nil
					}),
					resource.TestCheckResourceAttr("omnisql_principal.k8s", "regions.0", "eu"),
				),
			},
			{ResourceName: "omnisql_principal.ann", ImportState: true, ImportStateId: "tf-globex/ann", ImportStateVerify: true},
			{ResourceName: "omnisql_principal.k8s", ImportState: true, ImportStateId: "_platform/tf-k8s-eu", ImportStateVerify: true},
		},
	})
}
