package provider

import (
	"context"
	"net/http"
	"strings"

	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
)

// importTenantScoped imports an object of a tenant by `tenant/<key>`, setting `tenant` and `keyAttribute`.
func importTenantScoped(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse, keyAttribute string) {
	tenant, key, ok := strings.Cut(req.ID, "/")
	if !ok || tenant == "" || key == "" {
		resp.Diagnostics.AddError("Import id must be tenant/"+keyAttribute, "got "+req.ID)
		return
	}
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("tenant"), tenant)...)
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root(keyAttribute), key)...)
}

// deleteAt deletes the object at `apiPath`; one already gone is not an error.
func deleteAt(ctx context.Context, c *client, apiPath, what string, diags *diag.Diagnostics) {
	if err := c.call(ctx, http.MethodDelete, apiPath, nil, nil); err != nil && !isNotFound(err) {
		diags.AddError("Cannot delete the "+what, err.Error())
	}
}
