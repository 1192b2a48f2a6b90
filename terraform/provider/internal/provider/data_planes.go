package provider

import (
	"context"
	"net/http"

	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/datasource/schema"
	"github.com/hashicorp/terraform-plugin-framework/types"
)

// dataPlanesDataSource is `omnisql_data_planes`: the enrolled data planes, optionally of one region.
type dataPlanesDataSource struct{ client *client }

type dataPlaneModel struct {
	ID              types.String `tfsdk:"id"`
	Region          types.String `tfsdk:"region"`
	Hostname        types.String `tfsdk:"hostname"`
	Version         types.String `tfsdk:"version"`
	LastHeartbeatAt types.Int64  `tfsdk:"last_heartbeat_at"`
	AckedRevision   types.Int64  `tfsdk:"acked_revision"`
}

type dataPlanesModel struct {
	Region     types.String     `tfsdk:"region"`
	DataPlanes []dataPlaneModel `tfsdk:"data_planes"`
}

func newDataPlanesDataSource() datasource.DataSource { return &dataPlanesDataSource{} }

func (d *dataPlanesDataSource) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_data_planes"
}

func (d *dataPlanesDataSource) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	resp.Schema = schema.Schema{
		Description: "Enrolled data planes: version, last heartbeat (Unix ms) and the configuration revision each applied.",
		Attributes: map[string]schema.Attribute{
			"region": schema.StringAttribute{Optional: true, Description: "Only this region's."},
			"data_planes": schema.ListNestedAttribute{
				Computed: true,
				NestedObject: schema.NestedAttributeObject{Attributes: map[string]schema.Attribute{
					"id":                schema.StringAttribute{Computed: true},
					"region":            schema.StringAttribute{Computed: true},
					"hostname":          schema.StringAttribute{Computed: true},
					"version":           schema.StringAttribute{Computed: true},
					"last_heartbeat_at": schema.Int64Attribute{Computed: true},
					"acked_revision":    schema.Int64Attribute{Computed: true},
				}},
			},
		},
	}
}

func (d *dataPlanesDataSource) Configure(_ context.Context, req datasource.ConfigureRequest, _ *datasource.ConfigureResponse) {
	if c, ok := req.ProviderData.(*client); ok {
		d.client = c
	}
}

func (d *dataPlanesDataSource) Read(ctx context.Context, req datasource.ReadRequest, resp *datasource.ReadResponse) {
	var config dataPlanesModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &config)...)
	if resp.Diagnostics.HasError() {
		return
	}
	var all []struct {
		ID              string `json:"id"`
		Region          string `json:"region"`
		Hostname        string `json:"hostname"`
		Version         string `json:"version"`
		LastHeartbeatAt *int64 `json:"last_heartbeat_at"`
		AckedRevision   int64  `json:"acked_revision"`
	}
	if err := d.client.call(ctx, http.MethodGet, "/v1/data-planes", nil, &all); err != nil {
		resp.Diagnostics.AddError("Cannot list data planes", err.Error())
		return
	}
	config.DataPlanes = []dataPlaneModel{}
	for _, dp := range all {
		if !config.Region.IsNull() && dp.Region != config.Region.ValueString() {
			continue
		}
		config.DataPlanes = append(config.DataPlanes, dataPlaneModel{
			ID: types.StringValue(dp.ID), Region: types.StringValue(dp.Region), Hostname: types.StringValue(dp.Hostname),
			Version: types.StringValue(dp.Version), LastHeartbeatAt: types.Int64PointerValue(dp.LastHeartbeatAt),
			AckedRevision: types.Int64Value(dp.AckedRevision),
		})
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, &config)...)
}
