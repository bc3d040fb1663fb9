"""TM2@Nx-graphene structure generator: metals, N motifs of the dual-metal pocket, hosts and H* sites."""
